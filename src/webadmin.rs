//! webadmin (engine; being written)
