//! `fstore auth`: API keys. Through a server with an admin key of the tenant, or
//! straight on the shared NATS store with `--nats` (how the first admin key of a
//! tenant is made: whoever holds the NATS credentials holds the store).

use clap::Subcommand;
use fstore::client::Client;
use fstore_proto::api;
use serde_json::json;

use crate::error::usage;
use crate::output::{print_json, table, timestamp_text};

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Creates an API key and prints it once (the store keeps only its hash).
    CreateKey {
        /// The key's tenant [default: --tenant; through a server, the caller's].
        #[arg(long = "for")]
        for_tenant: Option<String>,
        /// read, write or admin; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// What the key is for, shown by `auth ls`.
        #[arg(long, default_value = "")]
        label: String,
        /// Write to the shared store at this NATS URL instead of calling a server.
        #[arg(long)]
        nats: Option<String>,
    },
    /// The tenant's keys (never their secrets).
    Ls {
        #[arg(long)]
        nats: Option<String>,
    },
    /// Revokes a key: every replica refuses it within `auth.cache_ttl`.
    Revoke {
        id: String,
        #[arg(long)]
        nats: Option<String>,
    },
}

/// Where the verb acts: a server, or the shared store itself.
pub struct Target<'a> {
    pub addr: &'a str,
    pub tenant: Option<String>,
    pub api_key: Option<String>,
    pub tls: fstore::client::ClientTls,
}

impl Target<'_> {
    /// A client of the server, with the key and TLS asked for.
    pub async fn connect(self) -> anyhow::Result<Client> {
        Ok(Client::connect_with(self.addr, self.tenant, &self.tls)
            .await?
            .with_api_key(self.api_key))
    }
}

pub async fn run(target: Target<'_>, verb: Verb, json: bool) -> anyhow::Result<()> {
    let nats = match &verb {
        Verb::CreateKey { nats, .. } | Verb::Ls { nats } | Verb::Revoke { nats, .. } => {
            nats.clone()
        }
    };
    match nats {
        Some(url) => direct(&url, target.tenant, verb, json).await,
        None => through(&target.connect().await?, verb, json).await,
    }
}

async fn through(store: &Client, verb: Verb, json: bool) -> anyhow::Result<()> {
    match verb {
        Verb::CreateKey {
            for_tenant,
            roles,
            label,
            ..
        } => {
            let made = store
                .create_api_key(api::CreateApiKeyRequest {
                    tenant: for_tenant.unwrap_or_default(),
                    roles,
                    label,
                })
                .await?;
            print_created(made.key.as_ref(), &made.secret, json)
        }
        Verb::Ls { .. } => print_keys(&store.list_api_keys().await?.keys, json),
        Verb::Revoke { id, .. } => print_keys(&[store.revoke_api_key(id).await?], json),
    }
}

/// On the shared store: the tenant is --for or --tenant.
async fn direct(url: &str, tenant: Option<String>, verb: Verb, json: bool) -> anyhow::Result<()> {
    let mut config = fstore::Config::load(None, &fstore::config::Flags::default())?;
    config.nats.url = Some(url.to_string());
    let substrate = fstore::server::substrate(&config).await?;
    let keys = substrate.keys.clone();
    let tenant_of = |for_tenant: Option<String>| {
        for_tenant
            .or(tenant.clone())
            .ok_or_else(|| usage("name the tenant: --for TENANT (or --tenant) with --nats"))
    };
    let done = match verb {
        Verb::CreateKey {
            for_tenant,
            roles,
            label,
            ..
        } => {
            let t = tenant_of(for_tenant)?;
            let made = fstore::auth::create_key(keys.as_ref(), &t, &roles, &label).await?;
            print_created(Some(&made.key), &made.secret, json)
        }
        Verb::Ls { .. } => {
            let t = tenant_of(None)?;
            print_keys(&fstore::auth::list_keys(keys.as_ref(), &t).await?, json)
        }
        Verb::Revoke { id, .. } => {
            let t = tenant_of(None)?;
            print_keys(
                &[fstore::auth::revoke_key(keys.as_ref(), &t, &id).await?],
                json,
            )
        }
    };
    substrate.connection.close().await;
    done
}

fn print_created(key: Option<&api::ApiKey>, secret: &str, json: bool) -> anyhow::Result<()> {
    let Some(key) = key else {
        anyhow::bail!("the server answered without the key's record");
    };
    if json {
        return print_json(&json!({ "key": key_json(key), "secret": secret }));
    }
    println!("{secret}");
    eprintln!(
        "key {} of tenant `{}` with roles {}: shown once, store it now (FSTORE_API_KEY)",
        key.id,
        key.tenant,
        key.roles.join(",")
    );
    Ok(())
}

fn key_json(k: &api::ApiKey) -> serde_json::Value {
    json!({
        "id": k.id, "tenant": k.tenant, "roles": k.roles, "label": k.label,
        "created_at_ms": k.created_at_ms,
        "revoked_at_ms": (k.revoked_at_ms != 0).then_some(k.revoked_at_ms),
    })
}

fn print_keys(keys: &[api::ApiKey], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&json!(keys.iter().map(key_json).collect::<Vec<_>>()));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.tenant.clone(),
                k.roles.join(","),
                k.label.clone(),
                timestamp_text(k.created_at_ms),
                if k.revoked_at_ms == 0 {
                    "-".to_string()
                } else {
                    timestamp_text(k.revoked_at_ms)
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "TENANT", "ROLES", "LABEL", "CREATED", "REVOKED"],
            &rows
        )
    );
    Ok(())
}
