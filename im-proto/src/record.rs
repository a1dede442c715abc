//! (in progress)
pub const TAG_LEN: usize = 32;
