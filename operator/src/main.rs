//! The rc-operator binary: `rc-operator crd` prints the CRD; `rc-operator run` (the default)
//! runs the controller.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rc-operator",
    version,
    about = "Kubernetes operator for ReplicatedCluster resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the ReplicatedCluster CustomResourceDefinition as YAML.
    Crd {
        /// Print the Helm template (behind `crds.create`, with a keep policy) instead.
        #[arg(long)]
        helm: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd { helm }) => {
            let yaml = if helm {
                rc_operator::crd::crd_helm_template()?
            } else {
                rc_operator::crd::crd_yaml()?
            };
            print!("{yaml}");
            Ok(())
        }
        None => anyhow::bail!("the controller is not wired yet"),
    }
}
