"""The search layer: spaces, the Optuna study, scoring, export. Only this layer knows Optuna;
the runtime never imports it."""
