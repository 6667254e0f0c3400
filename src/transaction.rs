//! transaction (engine; being written)
