"""The single contract between server, agent and dashboard: models, enums, event names."""
