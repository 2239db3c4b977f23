"""Several `hotline serve` instances behind nginx, on one Redis and one store
(`hotline fleet up`, README "Running in production")."""
