//! `rtm-plots`: redraws `docs/plots/*.svg` from `docs/plots/*.json`.
//!
//! ```text
//! cargo run -p rtm-plots                      # docs/plots/*.json -> docs/plots/*.svg
//! cargo run -p rtm-plots -- --data DIR --out DIR
//! ```
//! The data comes from `conformance/tools/plots/collect.sh`, which runs the
//! benchmarks; this program runs none.
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut data = rtm_plots::default_dir();
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--data" | "--out" => match args.next() {
                Some(v) => PathBuf::from(v),
                None => return usage(&format!("{arg} needs a folder")),
            },
            "-h" | "--help" => {
                println!("rtm-plots [--data DIR] [--out DIR]: draws the SVG plots from the JSON data (default: docs/plots for both)");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        };
        if arg == "--data" {
            data = value;
        } else {
            out = Some(value);
        }
    }
    let out = out.unwrap_or_else(|| data.clone());
    match rtm_plots::render_all(&data, &out) {
        Ok(written) => {
            for path in written {
                let path = path.canonicalize().unwrap_or(path);
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("rtm-plots: {err}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("rtm-plots: {problem}\nusage: rtm-plots [--data DIR] [--out DIR]");
    ExitCode::from(2)
}
