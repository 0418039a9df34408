//! The data plane. [`balance`] chooses the upstream server exactly as nginx 1.22 would; the
//! Pingora services that call it live beside it.

pub mod balance;
