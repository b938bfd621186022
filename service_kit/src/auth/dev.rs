//! Development tokens: `<service> dev-token --customer ID` or `--operator NAME` prints an HS256
//! token signed with `AUTH__HS256_SECRET`, or with the key in `AUTH__HS256_SECRET_FILE`,
//! generating that key (32 random bytes, hex, mode 0600) when the file does not exist yet, with
//! the configured issuer, audience and role claim. For a laptop or a compose stack: production
//! tokens come from an identity provider.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{EncodingKey, Header};

use crate::configuration::AuthSettings;

/// Who a development token is for.
#[derive(Debug, Clone, clap::Args)]
pub struct DevTokenArgs {
    /// A customer's token: `sub` is this customer id.
    #[arg(
        long,
        conflicts_with = "operator",
        required_unless_present = "operator"
    )]
    pub customer: Option<String>,
    /// An operator's token: `sub` is this name, with the operator role.
    #[arg(long)]
    pub operator: Option<String>,
    /// Minutes until it expires.
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
}

/// The key in `path`, generated first if the file does not exist.
pub fn ensure_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.exists() {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("creating {}", folder.display()))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .with_context(|| format!("creating the development key {}", path.display()))?;
        file.write_all(hex.as_bytes())?;
        tracing::info!(path = %path.display(), "development key generated");
    }
    let key = std::fs::read(path).with_context(|| format!("reading the key {}", path.display()))?;
    Ok(key.trim_ascii().to_vec())
}

/// A token for `subject`, an operator's when `operator`, signed with `secret`, valid from now for
/// `lifetime`, under `settings`' issuer, audience and role claim.
pub fn mint(
    settings: &AuthSettings,
    secret: &[u8],
    subject: &str,
    operator: bool,
    lifetime: Duration,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "iss": settings.issuer().unwrap_or_default(),
        "aud": settings.audience().unwrap_or_default(),
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
    });
    if operator {
        // `realm_access.roles` becomes {"realm_access": {"roles": [role]}}.
        let mut value = serde_json::json!([settings.operator_role]);
        for step in settings.role_claim.rsplit('.') {
            value = serde_json::json!({ step: value });
        }
        if let (Some(claims), serde_json::Value::Object(roles)) = (claims.as_object_mut(), value) {
            claims.extend(roles);
        }
    }
    Ok(jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret)?,
    )?)
}

/// Runs `dev-token`: the token to print. `prefix` names the variables in messages.
pub fn run(settings: &AuthSettings, prefix: &str, args: &DevTokenArgs) -> anyhow::Result<String> {
    if settings.issuer().is_none() || settings.audience().is_none() {
        anyhow::bail!("set {prefix}__AUTH__ISSUER and {prefix}__AUTH__AUDIENCE");
    }
    let secret = match (&settings.hs256_secret, settings.hs256_secret_file()) {
        (Some(secret), _) if !secret.expose().is_empty() => secret.expose().as_bytes().to_vec(),
        (_, Some(path)) => ensure_key(Path::new(path))?,
        _ => anyhow::bail!(
            "set {prefix}__AUTH__HS256_SECRET, or {prefix}__AUTH__HS256_SECRET_FILE (the \
             development key, generated if missing) as scripts/dev-auth.sh does"
        ),
    };
    let lifetime = Duration::from_secs(args.minutes.saturating_mul(60));
    match (&args.customer, &args.operator) {
        (Some(customer), _) => mint(settings, &secret, customer, false, lifetime),
        (None, Some(operator)) => mint(settings, &secret, operator, true, lifetime),
        (None, None) => anyhow::bail!("give --customer ID or --operator NAME"),
    }
}
