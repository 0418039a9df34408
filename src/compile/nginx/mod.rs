//! The nginx front end: nginx.conf (with its includes) to the model.
//!
//! Two stages: parsing reads the files into a statement tree exactly as nginx 1.22 tokenizes
//! them and checks each directive's context and argument count as nginx does; [`lower`] turns the
//! statements a load balancer needs into the model and reports the rest.

pub mod directives;
pub mod include;
pub mod lexer;
pub mod lower;
pub mod parse;
pub mod slots;
pub mod tree;

use std::path::Path;

use super::diag::Diagnostic;
use super::{Compiled, Failed, InputKind, Options};

/// Compiles an nginx.conf and everything it includes.
///
/// nginx stops at its first error. Parsing stops there too, and the lowering then runs on the
/// statements read before it: a lowering error about one of those statements is what nginx
/// would have met first, so it wins; otherwise the parse error stands. A parse error without a
/// position (`no "events" section`) is one nginx finds after reading everything, so any
/// lowering error comes before it.
pub fn compile(path: &Path, options: &Options) -> Result<Compiled, Failed> {
    let parsed = parse::parse_file(path, options);
    let lowered = lower::lower(&parsed.tree, options);
    let sources = parsed.sources;
    let error = match (parsed.error, lowered) {
        (None, Ok((model, report))) => {
            return Ok(Compiled {
                model,
                report,
                sources,
                kind: InputKind::Nginx,
            })
        }
        (None, Err(lower)) => lower,
        (Some(parse), Ok(_)) => parse,
        (Some(parse), Err(lower)) => first_error(parse, lower),
    };
    Err(Failed {
        diagnostic: Box::new(error),
        sources,
    })
}

fn first_error(parse: Diagnostic, lower: Diagnostic) -> Diagnostic {
    // nginx checks an upstream's servers, and that a stream server has a handler, when the
    // block ends; a block the parse error cut short never ended, so those are ours alone.
    let at_block_end = lower.message.starts_with("no servers are inside upstream")
        || lower.message == "no handler for server";
    // nginx looks variables up once the whole configuration is read, after any parse error.
    let at_config_end =
        lower.message.starts_with("unknown \"") && lower.message.ends_with("\" variable");
    if parse.origin.is_none() || (lower.origin.is_some() && !at_block_end && !at_config_end) {
        lower
    } else {
        parse
    }
}
