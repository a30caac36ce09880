"""socioseg: urban socio-semantic segmentation with vision-language reasoning (SocioReasoner)."""

__version__ = "0.1.0"
