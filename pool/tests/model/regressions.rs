//! Shrunk failures of the model test, kept as plain tests.
