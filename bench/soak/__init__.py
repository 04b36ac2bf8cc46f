"""The chaos soak (``python -m bench.soak``): virtual phones on several real agents, jobs flowing, random
seeded faults, then an exact audit of every job's accounting against what the phones really ran."""
