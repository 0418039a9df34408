//! Lowering: the statements a load balancer needs, turned into the model; everything else
//! listed in the report.

use super::tree::Tree;
use crate::compile::diag::Diagnostic;
use crate::compile::{Options, Report};
use crate::config::Appliance;

/// Lowers a parsed tree. The first error in file order is returned, as nginx stops there.
pub fn lower(tree: &Tree, options: &Options) -> Result<(Appliance, Report), Diagnostic> {
    let _ = (tree, options);
    Ok((Appliance::default(), Report::default()))
}
