//! `pubsub-hub inspect`: `PUBSUB CHANNELS`, `NUMSUB` and `NUMPAT` as a table or JSON.

use pubsub_hub::HubConfig;
use serde_json::json;

use crate::cli::InspectArgs;
use crate::config::RedisTarget;
use crate::error::CliError;
use crate::table::Table;

/// Asks Redis and prints the answer.
pub async fn run(target: &RedisTarget, args: &InspectArgs) -> Result<(), CliError> {
    let hub = super::connect(target, HubConfig::default()).await?;
    let result = inspect(&hub, target, args).await;
    hub.shutdown().await;
    print!("{}", result?);
    Ok(())
}

async fn inspect(
    hub: &pubsub_hub::PubSubHub,
    target: &RedisTarget,
    args: &InspectArgs,
) -> Result<String, CliError> {
    let address = target.display();
    let fail = |e: pubsub_hub::HubError| CliError::from_hub("PUBSUB", &address, &e);
    let channels = if args.channels.is_empty() {
        let mut all = hub.active_channels(&args.pattern).await.map_err(fail)?;
        // Servers before Redis 7 have no shard channels; that is not an error here.
        if let Ok(shard) = hub.shard_channels(&args.pattern).await {
            all.extend(shard);
            all.sort();
            all.dedup();
        }
        all
    } else {
        args.channels.clone()
    };
    let view = hub
        .introspect(&args.pattern, &channels)
        .await
        .map_err(fail)?;
    if args.json {
        let doc = json!({
            "pattern": args.pattern,
            "active_channels": view.active_channels,
            "numsub": view.numsub,
            "numpat": view.numpat,
            "shard_channels": view.shard_channels,
            "shard_numsub": view.shard_numsub,
        });
        return Ok(format!("{doc}\n"));
    }
    let is_shard_only = |c: &String| {
        view.shard_channels.binary_search(c).is_ok()
            && view.active_channels.binary_search(c).is_err()
    };
    let mut table = Table::new(["CHANNEL", "SUBSCRIBERS", "ACTIVE"]);
    table.right_align(1);
    for channel in channels
        .iter()
        .filter(|c| args.channels.contains(c) || !is_shard_only(c))
    {
        let n = view.numsub.get(channel).copied().unwrap_or(0);
        let active = view.active_channels.binary_search(channel).is_ok();
        table.row([
            channel.clone(),
            n.to_string(),
            if active { "yes" } else { "no" }.into(),
        ]);
    }
    let mut out = if table.is_empty() {
        format!("no channel matching {:?} has a subscriber\n", args.pattern)
    } else {
        table.render()
    };
    out.push_str(&format!(
        "pattern subscriptions (NUMPAT): {}\n",
        view.numpat
    ));
    let shard_rows: Vec<&String> = channels
        .iter()
        .filter(|c| view.shard_numsub.get(*c).copied().unwrap_or(0) > 0)
        .collect();
    if !shard_rows.is_empty() {
        let mut shard = Table::new(["SHARD CHANNEL", "SUBSCRIBERS"]);
        shard.right_align(1);
        for c in shard_rows {
            shard.row([c.clone(), view.shard_numsub[c].to_string()]);
        }
        out.push('\n');
        out.push_str(&shard.render());
    }
    Ok(out)
}
