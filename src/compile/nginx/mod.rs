//! The nginx front end: nginx.conf (with its includes) to the model.
//!
//! Two stages: parsing reads the files into a statement tree exactly as nginx 1.22 tokenizes
//! them and checks each directive's context and argument count as nginx does; [`lower`] turns the
//! statements a load balancer needs into the model and reports the rest.

pub mod lower;
pub mod tree;

use std::path::Path;

use super::{Compiled, Failed, Options};

/// Compiles an nginx.conf and everything it includes.
pub fn compile(path: &Path, options: &Options) -> Result<Compiled, Failed> {
    let _ = (path, options);
    Err(super::diag::Diagnostic::error("the nginx parser is not in this build yet").into())
}
