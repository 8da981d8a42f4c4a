"""The foundation every stage and flow stands on: settings, the engine, cost, the stage cache,
tracking and scoring. It imports no stage, flow or entry point."""
