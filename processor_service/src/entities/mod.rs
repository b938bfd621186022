//! sea-orm entities of the processor's tables.

pub mod processing;
