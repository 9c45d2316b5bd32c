"""The chaos campaign: the whole pipeline under random kills and network faults, counted (see __main__)."""
