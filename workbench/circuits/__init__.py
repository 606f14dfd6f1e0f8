"""Edge-level circuits: the edge graph, EAP / EAP-IG and exact edge patching, faithfulness, CPR / CMD, circuit diffs."""
