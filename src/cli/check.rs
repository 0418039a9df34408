//! `appliance check -c FILE`, which behaves like `nginx -t`: the same messages on standard error
//! and the same exit statuses (0 when the configuration is usable, 1 when it is not).

use std::path::Path;
use std::process::ExitCode;

use crate::compile::Options;

pub fn run(path: &Path, options: &Options, quiet: bool, program: &str) -> ExitCode {
    let shown = path.display();
    // nginx -t also resolves upstream host names and reads the certificates: so does the
    // runtime's build, which `run` would do next.
    let compiled = super::compile(path, options).and_then(|compiled| {
        match crate::proxy::runtime::Runtime::build(&compiled.model) {
            Ok(_) => Ok(compiled),
            Err(d) => Err(crate::compile::Failed {
                diagnostic: Box::new(d),
                sources: compiled.sources,
            }),
        }
    });
    match compiled {
        Ok(compiled) => {
            if !quiet {
                for w in &compiled.report.warnings {
                    eprintln!("{}", w.one_line(program));
                }
                for item in compiled.report.not_mapped() {
                    if item.support != crate::compile::Support::Skipped {
                        eprintln!(
                            "{program}: [warn] \"{}\" is not supported ({}) in {}:{}",
                            item.name, item.note, item.origin.file, item.origin.line
                        );
                    }
                }
                eprintln!("{program}: the configuration file {shown} syntax is ok");
                eprintln!("{program}: configuration file {shown} test is successful");
            }
            ExitCode::SUCCESS
        }
        Err(failed) => {
            super::print_failure(&failed, program);
            eprintln!("{program}: configuration file {shown} test failed");
            ExitCode::FAILURE
        }
    }
}
