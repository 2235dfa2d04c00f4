//! What the benchmark prints and writes: the nccl-tests table on stdout,
//! the progress bar on stderr, the JSON (serde) and the SVG plot.

use std::io::Write as _;

use serde::Serialize;

use crate::options::Opts;
use crate::timing::Row;

/// Writes the report to stdout (the `out!` and `outln!` macros). A closed
/// pipe (`nccl-bench | head`) ends the program quietly with status 0, as
/// the programs of a shell pipeline do; any other failure is an error.
pub fn stdout(text: std::fmt::Arguments) {
    if let Err(e) = std::io::stdout().write_fmt(text) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        crate::fail(format!("writing to stdout: {e}"));
    }
}

/// The header of one collective's table.
pub fn print_header(o: &Opts, coll: &str, world: usize, type_name: &str) {
    outln!(
        "#\n# {coll}  ({} ranks, {}, op {}, root {}, {} iters, {} warm-up{})",
        world,
        type_name,
        o.op,
        o.root,
        o.iters,
        o.warmup,
        if o.graph { ", CUDA graph" } else { "" }
    );
    outln!(
        "# cudarc event tracking: {}; communicator: {}",
        if o.event_tracking {
            "on (default)"
        } else {
            "off (--no-event-tracking)"
        },
        if o.nonblocking {
            "non-blocking (--nonblocking)"
        } else {
            "blocking (default)"
        }
    );
    outln!(
        "# {:>12} {:>12} {:>6} {:>6} {:>5}   {:>9} {:>8} {:>8} {:>6} {:>8}   {:>9} {:>8} {:>8} {:>6} {:>8}",
        "size",
        "count",
        "type",
        "redop",
        "root",
        "time",
        "algbw",
        "busbw",
        "#wrong",
        "host",
        "time",
        "algbw",
        "busbw",
        "#wrong",
        "host"
    );
    outln!(
        "# {:>12} {:>12} {:>6} {:>6} {:>5}   {:>9} {:>8} {:>8} {:>6} {:>8}   {:>9} {:>8} {:>8} {:>6} {:>8}",
        "(B)",
        "(elements)",
        "",
        "",
        "",
        "(us)",
        "(GB/s)",
        "(GB/s)",
        "",
        "(us)",
        "(us)",
        "(GB/s)",
        "(GB/s)",
        "",
        "(us)"
    );
}

/// One size: out of place, then in place.
pub fn print_row(o: &Opts, size: usize, count: usize, type_name: &str, line: &[Row; 2]) {
    outln!(
        "  {:>12} {:>12} {:>6} {:>6} {:>5}   {}   {}",
        size,
        count,
        type_name,
        o.op,
        o.root,
        cell(o, &line[0]),
        cell(o, &line[1])
    );
}

fn cell(o: &Opts, r: &Row) -> String {
    if r.wrong < 0 {
        format!(
            "{:>9} {:>8} {:>8} {:>6} {:>8}",
            "N/A", "N/A", "N/A", "N/A", "N/A"
        )
    } else {
        format!(
            "{:>9.2} {:>8.2} {:>8.2} {:>6} {:>8.2}",
            r.time_us,
            r.algbw,
            r.busbw,
            if o.check {
                r.wrong.to_string()
            } else {
                "N/A".into()
            },
            r.host_us
        )
    }
}

/// The closing lines: mean bus bandwidth of the large sizes, and the check.
pub fn print_summary(rows: &[Row], wrong: i64) {
    let big: Vec<f64> = rows
        .iter()
        .filter(|r| r.bytes >= 64 << 20 && !r.in_place)
        .map(|r| r.busbw)
        .collect();
    if !big.is_empty() {
        outln!(
            "# avg bus bandwidth at >= 64 MiB (out of place): {:.3} GB/s",
            big.iter().sum::<f64>() / big.len() as f64
        );
    }
    outln!(
        "# out of bounds values: {wrong} {}",
        if wrong == 0 { "OK" } else { "FAILED" }
    );
}

/// The progress bar on stderr (rank 0 only, unless `--no-progress`).
pub struct Progress {
    on: bool,
    done: usize,
    total: usize,
}

impl Progress {
    pub fn new(on: bool, total: usize) -> Progress {
        Progress { on, done: 0, total }
    }

    /// One more measurement done.
    pub fn step(&mut self, coll: &str, size: usize) {
        self.done += 1;
        if self.on {
            let (done, total) = (self.done, self.total);
            let w = 30 * done / total;
            eprint!(
                "\r[{}{}] {done}/{total} {coll} {size} B   ",
                "#".repeat(w),
                " ".repeat(30 - w)
            );
            let _ = std::io::stderr().flush();
        }
    }

    /// Wipes the bar before a table line.
    pub fn clear(&self) {
        if self.on {
            eprint!("\r{}\r", " ".repeat(80));
        }
    }
}

/// The JSON report (`--json`).
#[derive(Serialize)]
struct Report<'a> {
    world: usize,
    datatype: &'a str,
    op: &'a str,
    iters: usize,
    warmup: usize,
    graph: bool,
    event_tracking: bool,
    nonblocking: bool,
    nccl: String,
    link: String,
    results: Vec<JsonRow<'a>>,
}

/// One measurement in the JSON report; figures to 3 decimals.
#[derive(Serialize)]
struct JsonRow<'a> {
    coll: &'a str,
    bytes: usize,
    count: usize,
    in_place: bool,
    time_us: f64,
    algbw_gbs: f64,
    busbw_gbs: f64,
    host_us: f64,
    wrong: i64,
}

fn milli(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The JSON text of a run.
pub fn json(o: &Opts, world: usize, rows: &[Row]) -> String {
    let report = Report {
        world,
        datatype: o.dtype,
        op: &o.op,
        iters: o.iters,
        warmup: o.warmup,
        graph: o.graph,
        event_tracking: o.event_tracking,
        nonblocking: o.nonblocking,
        nccl: nccl::version().map(|v| v.to_string()).unwrap_or_default(),
        link: format!("{:?}", nccl::sys::LINK_MODE),
        results: rows
            .iter()
            .map(|r| JsonRow {
                coll: &r.coll,
                bytes: r.bytes,
                count: r.count,
                in_place: r.in_place,
                time_us: milli(r.time_us),
                algbw_gbs: milli(r.algbw),
                busbw_gbs: milli(r.busbw),
                host_us: milli(r.host_us),
                wrong: r.wrong,
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&report).expect("plain data serializes");
    s.push('\n');
    s
}

pub fn write_json(path: &str, o: &Opts, world: usize, rows: &[Row]) -> std::io::Result<()> {
    std::fs::write(path, json(o, world, rows))
}

/// An SVG with two panels (busbw and time against size, log scales), one
/// line per collective (out-of-place results).
pub fn write_svg(path: &str, rows: &[Row]) -> std::io::Result<()> {
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    ];
    let pts: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.in_place && r.time_us > 0.0)
        .collect();
    let (w, h, pad) = (520.0, 360.0, 60.0);
    let lx = |b: usize| (b as f64).log2();
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
        (a.min(lx(r.bytes)), b.max(lx(r.bytes)))
    });
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        2.0 * w,
        h
    );
    for (panel, (title, val, log)) in [
        (
            "busbw (GB/s)",
            (|r: &Row| r.busbw) as fn(&Row) -> f64,
            false,
        ),
        ("time (us)", |r: &Row| r.time_us, true),
    ]
    .into_iter()
    .enumerate()
    {
        let ox = panel as f64 * w;
        let f = |v: f64| if log { v.max(1e-3).log10() } else { v };
        let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
            (a.min(f(val(r))), b.max(f(val(r))))
        });
        let (y0, y1) = if log {
            (y0, y1.max(y0 + 1e-9))
        } else {
            (0.0, y1.max(1e-9))
        };
        let px = |x: f64| ox + pad + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * pad);
        let py = |y: f64| h - pad - (y - y0) / (y1 - y0).max(1e-9) * (h - 2.0 * pad);
        svg += &format!(
            "<rect x=\"{}\" y=\"{pad}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n",
            ox + pad,
            w - 2.0 * pad,
            h - 2.0 * pad
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{title} vs size (bytes, log2)</text>\n",
            ox + w / 2.0,
            pad - 20.0
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\">{}</text>\n",
            ox + 4.0,
            py(y1) + 4.0,
            fmt_axis(y1, log),
            ox + 4.0,
            py(y0),
            fmt_axis(y0, log)
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            px(x0),
            h - pad + 16.0,
            1u64 << x0 as u32,
            px(x1),
            h - pad + 16.0,
            1u64 << x1 as u32
        );
        let mut names: Vec<&str> = pts.iter().map(|r| r.coll.as_str()).collect();
        names.dedup();
        for (ci, name) in names.iter().enumerate() {
            let line: Vec<String> = pts
                .iter()
                .filter(|r| r.coll == *name)
                .map(|r| format!("{:.1},{:.1}", px(lx(r.bytes)), py(f(val(r)))))
                .collect();
            let c = colors[ci % colors.len()];
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
                line.join(" ")
            );
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
                ox + pad + 8.0,
                pad + 16.0 + 14.0 * ci as f64
            );
        }
    }
    svg += "</svg>\n";
    std::fs::write(path, svg)
}

fn fmt_axis(v: f64, log: bool) -> String {
    if log {
        format!("{:.3}", 10f64.powf(v))
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        let mut v = Vec::new();
        for (ci, coll) in ["all_reduce", "all_gather"].into_iter().enumerate() {
            for k in 0..5 {
                let bytes = 8usize << (4 * k);
                v.push(Row {
                    coll: coll.into(),
                    bytes,
                    count: bytes / 4,
                    in_place: false,
                    time_us: 5.0 + bytes as f64 / 1e4,
                    algbw: bytes as f64 / 1e4,
                    busbw: (ci + 1) as f64 * bytes as f64 / 1e4,
                    host_us: 4.0,
                    wrong: 0,
                });
            }
        }
        v
    }

    #[test]
    fn svg_has_one_line_per_collective_in_each_panel() {
        let p = std::env::temp_dir().join(format!("nccl-bench-test-{}.svg", std::process::id()));
        write_svg(p.to_str().unwrap(), &rows()).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s.matches("<polyline").count(), 4, "{s}");
        assert!(
            s.contains(">all_reduce<") && s.contains(">all_gather<") && s.contains("busbw (GB/s)")
        );
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn json_lists_every_row_with_the_same_keys_as_before() {
        let o = Opts {
            dtype: "bf16",
            ..Opts::default()
        };
        let mut rows = rows();
        rows[1].time_us = 1.23456;
        let s = json(&o, 2, &rows);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["world"], 2);
        assert_eq!(v["datatype"], "bf16");
        assert_eq!(v["op"], "sum");
        assert_eq!(v["iters"], 20);
        assert_eq!(v["link"], format!("{:?}", nccl::sys::LINK_MODE));
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 10);
        assert_eq!(results[1]["time_us"], 1.235, "3 decimals, as before");
        assert_eq!(results[1]["bytes"], 128);
        assert_eq!(results[5]["coll"], "all_gather");
        for key in [
            "coll",
            "bytes",
            "count",
            "in_place",
            "time_us",
            "algbw_gbs",
            "busbw_gbs",
            "host_us",
            "wrong",
        ] {
            assert!(results[0].get(key).is_some(), "{key}");
        }
        // the substring the GPU check and scripts look for
        assert!(s.contains("\"coll\": \"all_reduce\""), "{s}");
    }
}
