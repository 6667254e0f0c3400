//! swap (engine; being written)
