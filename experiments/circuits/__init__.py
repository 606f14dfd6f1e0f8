"""Edge circuits on the default model: EAP, EAP-IG and random edges scored by MIB's CPR / CMD; a circuit diff."""
