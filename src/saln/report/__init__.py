"""Reports: aggregate stored runs into tables, verdicts and pictures. Reads records only."""
