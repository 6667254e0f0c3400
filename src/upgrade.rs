//! upgrade (engine; being written)
