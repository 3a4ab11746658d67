//! `archy id new|show`.

use crate::home::Home;
use crate::identity::Identity;
use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum IdCmd {
    /// Create a new identity in the home (refuses to overwrite one).
    New {
        #[arg(long)]
        json: bool,
    },
    /// Show the identity: DID, Nostr public key (hex) and npub.
    Show {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(home: &Home, cmd: IdCmd) -> Result<()> {
    let (identity, json) = match cmd {
        IdCmd::New { json } => (Identity::create(home)?, json),
        IdCmd::Show { json } => (Identity::load(home)?, json),
    };
    let public = identity.public();
    if json {
        super::print_json(&public)
    } else {
        println!("did:   {}", public.did);
        println!("nostr: {}", public.nostr);
        println!("npub:  {}", public.npub);
        Ok(())
    }
}
