//! history (engine; being written)
