//! (being written: `tower-mesh registry …`)

/// `tower-mesh registry` arguments.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// The registry URL.
    #[arg(long)]
    pub registry: Option<String>,
}

/// Why a registry command failed.
#[derive(Debug, thiserror::Error)]
#[error("registry command")]
pub struct CliError;

/// Runs `args`, writing to `out`.
pub async fn run(
    args: RegistryArgs,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), CliError> {
    let _ = (args, out);
    Ok(())
}
