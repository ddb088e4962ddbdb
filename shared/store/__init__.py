"""The Store (Milestone 6): memory that outlives a thread, searched by meaning, kept per user."""
