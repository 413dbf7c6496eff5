//! The reconciler: `observe -> validate -> build -> apply -> status`, each step in its own
//! module and marked pure or client-side.

pub mod build;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;
