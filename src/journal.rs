//! journal (engine; being written)
