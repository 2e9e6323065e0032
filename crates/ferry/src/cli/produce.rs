//! `ferry produce TOPIC [VALUE...]`: values from the arguments, or one per
//! line from stdin.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_client::Record;
use ferry_records::compression::Compression;
use ferry_records::partitioner::partition_for_key;
use ferry_util::time::now_ms;
use serde_json::json;

use super::output::json;
use super::{ClientArgs, Format, key_values};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Codec {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<Codec> for Compression {
    fn from(c: Codec) -> Compression {
        match c {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Record values; without any, one record per line of stdin.
    pub values: Vec<String>,
    /// Key of every record.
    #[arg(long, short = 'k')]
    pub key: Option<String>,
    /// Split each value at the first SEP into key and value (e.g. ':').
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Record header KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Partition to write to (default: by key hash as Kafka's partitioner,
    /// partition 0 for records without a key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub acks: i16,
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    /// Most records per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
    #[command(flatten)]
    pub conn: ClientArgs,
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let values: Vec<String> = if args.values.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<_, _>>().context("reading stdin")?
    } else {
        args.values.clone()
    };
    let headers: Vec<(String, Vec<u8>)> =
        key_values(&args.headers, "header")?.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    let client = args.conn.connect().await?;
    let topic = client.topic(&args.topic).await?;
    let count = topic.partitions.len() as i32;
    if let Some(p) = args.partition
        && !(0..count).contains(&p)
    {
        anyhow::bail!("topic {} has no partition {p} (it has {count})", args.topic);
    }
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let now = now_ms();
    for v in values {
        let (key, value) = match (&args.key_separator, &args.key) {
            (Some(sep), _) => match v.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                None => (args.key.as_ref().map(|k| k.as_bytes().to_vec()), v.into_bytes()),
            },
            (None, key) => (key.as_ref().map(|k| k.as_bytes().to_vec()), v.into_bytes()),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) if count > 0 => partition_for_key(k, count as usize) as i32,
            _ => 0,
        };
        by_partition.entry(partition).or_default().push(Record {
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: now,
        });
    }
    let mut total = 0usize;
    let mut offsets = serde_json::Map::new();
    for (partition, records) in &by_partition {
        let mut first = None;
        for chunk in records.chunks(args.batch_records.max(1)) {
            let base = client.produce(&args.topic, *partition, chunk, args.acks, args.compression.into()).await?;
            first.get_or_insert(base);
            total += chunk.len();
        }
        offsets.insert(partition.to_string(), json!(first));
    }
    match args.conn.format {
        Format::Json => json(&json!({ "topic": args.topic, "records": total, "first_offsets": offsets })),
        Format::Table => say!("produced {total} records to {}", args.topic),
    }
    Ok(())
}
