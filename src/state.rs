//! state (engine; being written)
