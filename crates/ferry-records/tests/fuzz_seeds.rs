//! The fuzz targets' seeds: batches of every codec, a control batch and
//! records with duplicate header keys. Written to `$FERRY_FUZZ_CORPUS/batch`
//! and `$FERRY_FUZZ_CORPUS/decompress` when that variable is set; always
//! checked to decode, so the seeds stay valid inputs.

use ferry_records::batch;
use ferry_records::compression::{Compression, compress, decompress};
use ferry_records::records::{NewRecord, build_batch, build_control_batch, parse_records, records_payload};

const CODECS: [Compression; 5] =
    [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

fn seeds() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let value = b"a value that repeats, a value that repeats, a value that repeats".to_vec();
    let records: Vec<NewRecord<'_>> = (0..4)
        .map(|i| NewRecord {
            key: (i % 2 == 0).then_some(b"key".as_slice()),
            value: (i != 3).then_some(value.as_slice()),
            headers: vec![(b"h".as_slice(), Some(b"1".as_slice())), (b"h".as_slice(), None)],
            timestamp: 1_700_000_000_000 + i,
        })
        .collect();
    let mut out = Vec::new();
    for codec in CODECS {
        let b = build_batch(&records, codec, 7, 0, 0).expect("batch");
        let packed = compress(codec, &value).expect("compress");
        let mut d = vec![codec.id() as u8];
        d.extend_from_slice(&packed);
        out.push((format!("{codec:?}").to_lowercase(), b, d));
    }
    let control = build_control_batch(7, 0, true, 3, 1_700_000_000_000).expect("control batch");
    out.push(("control".into(), control, vec![0]));
    out
}

#[test]
fn fuzz_seeds() {
    let dir = std::env::var_os("FERRY_FUZZ_CORPUS").map(std::path::PathBuf::from);
    for (name, b, d) in seeds() {
        let h = batch::validate(&b).expect("seed batch is valid");
        let payload = records_payload(&b, 1 << 20).expect("payload");
        assert_eq!(parse_records(&payload, h.records_count as usize).expect("records").len(), h.records_count as usize);
        let codec = Compression::from_attributes(i16::from(d[0])).expect("codec");
        decompress(codec, &d[1..], 1 << 20).expect("seed decompresses");
        if let Some(dir) = &dir {
            for (target, bytes) in [("batch", &b), ("decompress", &d)] {
                std::fs::create_dir_all(dir.join(target)).expect("seed dir");
                std::fs::write(dir.join(target).join(&name), bytes).expect("seed file");
            }
        }
    }
}
