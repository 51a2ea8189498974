"""Resource package for the embedded data files (installed as sfhkit.embedded); no code."""
