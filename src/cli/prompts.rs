//! `tollgate prompts render` and `tollgate prompts test`: prompt templates reviewed and
//! tested offline, in CI, like code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use serde_json::{Map, Value};

use crate::prompt::{PromptFiles, fixtures};
use crate::snapshot::{self, Snapshot};
use crate::telemetry::metrics::Metrics;

#[derive(Subcommand, Debug)]
pub enum PromptsCommand {
    /// Render one prompt version and print its messages as JSON.
    Render {
        /// Config file; without it, as `serve` finds one.
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        id: String,
        /// The version to render (or `--label`).
        #[arg(long, conflicts_with = "label", required_unless_present = "label")]
        version: Option<String>,
        #[arg(long)]
        label: Option<String>,
        /// YAML or JSON file with the variables, as an object.
        #[arg(long)]
        vars: Option<PathBuf>,
    },
    /// Run every fixture case (`<prompts dir>/<id>/tests/*.yaml`); exit 1 on any difference.
    Test {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub fn run(command: PromptsCommand) -> ExitCode {
    let result = match command {
        PromptsCommand::Render {
            config,
            id,
            version,
            label,
            vars,
        } => render(config, &id, version.as_deref(), label.as_deref(), vars),
        PromptsCommand::Test { config } => test(config),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tollgate: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The compiled config and its prompt files, as the gateway would load them.
fn compiled(path: Option<PathBuf>) -> Result<(Snapshot, PromptFiles), String> {
    let (config, text, _) = super::load(path)?;
    let snapshot =
        snapshot::compile(&config, &text, &Arc::new(Metrics::new())).map_err(|e| e.to_string())?;
    let files = match &config.prompts {
        Some(prompts) => {
            PromptFiles::read(prompts).map_err(|(path, why)| format!("{path}: {why}"))?
        }
        None => return Err("the config has no `prompts` section".into()),
    };
    Ok((snapshot, files))
}

fn render(
    config: Option<PathBuf>,
    id: &str,
    version: Option<&str>,
    label: Option<&str>,
    vars: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let (snapshot, _) = compiled(config)?;
    let prompt = snapshot
        .prompts
        .get(id)
        .ok_or_else(|| format!("no prompt `{id}`"))?;
    let chosen = match (version, label) {
        (Some(v), _) => prompt
            .version(v)
            .ok_or_else(|| format!("prompt `{id}` has no version `{v}`"))?,
        (None, Some(l)) => prompt
            .label(l)
            .ok_or_else(|| format!("prompt `{id}` has no label `{l}`"))?,
        (None, None) => return Err("name --version or --label".into()),
    };
    let variables: Option<Map<String, Value>> = match vars {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
    };
    let messages = chosen
        .render(variables)
        .map_err(|e| format!("{}: {e}", chosen.reference_str()))?;
    let json = serde_json::to_string_pretty(&messages).map_err(|e| e.to_string())?;
    println!("{json}");
    eprintln!("{} (hash {})", chosen.reference_str(), chosen.hash);
    Ok(ExitCode::SUCCESS)
}

fn test(config: Option<PathBuf>) -> Result<ExitCode, String> {
    let (snapshot, files) = compiled(config)?;
    let outcomes = fixtures::run(&snapshot.prompts, &files);
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    for outcome in &outcomes {
        match &outcome.failure {
            None => println!("ok    {}", outcome.case),
            Some(why) => println!(
                "FAIL  {}\n      {}",
                outcome.case,
                why.replace('\n', "\n      ")
            ),
        }
    }
    println!("{} cases, {failed} failed", outcomes.len());
    Ok(if failed == 0 && !outcomes.is_empty() {
        ExitCode::SUCCESS
    } else {
        if outcomes.is_empty() {
            eprintln!("tollgate: no fixture cases found (<prompts dir>/<id>/tests/*.yaml)");
        }
        ExitCode::FAILURE
    })
}
