//! health (engine; being written)
