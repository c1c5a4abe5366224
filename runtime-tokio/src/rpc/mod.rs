//! Placeholder: lands with its module.
