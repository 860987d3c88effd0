//! A [`Report`] as tables: for the terminal (comfy-table, box drawing) and as Markdown.
//!
//! Rules: every table is built once as a [`Section`] (title, header, rows, notes) from the
//! report and drawn by either style, so the terminal and the Markdown report never disagree.
//! Numbers are formatted here and nowhere else.

use comfy_table::{CellAlignment, ContentArrangement, Table, TableStyle, presets};

use super::compare::Comparison;
use super::scaling::Row as ScaleRow;
use super::{Report, Side, SideAccuracy};

/// One table.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Section {
        Section {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn draw(&self, style: TableStyle) -> String {
        let mut t = Table::new();
        t.load_style(style).set_content_arrangement(ContentArrangement::Disabled);
        t.set_header(self.header.clone());
        for r in &self.rows {
            t.add_row(r.clone());
        }
        // Figures right-aligned, the first (label) column left.
        for (i, c) in t.column_iter_mut().enumerate() {
            if i > 0 {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        t.to_string()
    }

    /// Box-drawn for a terminal.
    pub fn terminal(&self) -> String {
        let mut out = format!("{}\n{}\n", self.title, self.draw(presets::UTF8_FULL_CONDENSED));
        for n in &self.notes {
            out.push_str(&format!("  {n}\n"));
        }
        out
    }

    /// A Markdown section (`### title`, a pipe table, notes as a list).
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n{}\n", self.title, self.draw(presets::ASCII_MARKDOWN));
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

/// Milliseconds with three significant figures.
pub fn ms(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0} ms")
    } else if a >= 10.0 {
        format!("{v:.1} ms")
    } else if a >= 1.0 {
        format!("{v:.2} ms")
    } else if a >= 0.01 {
        format!("{v:.3} ms")
    } else {
        format!("{:.2} µs", v * 1e3)
    }
}

/// Bytes in B / KiB / MiB / GiB.
pub fn bytes(b: u64) -> String {
    let f = b as f64;
    if b < 1024 {
        format!("{b} B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else if f < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    }
}

/// A ratio as `12.3x`.
pub fn times(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v >= 100.0 { format!("{v:.0}x") } else { format!("{v:.2}x") }
}

/// A ratio of FP32 over ternary as `2.10x <better>`, or below 1 as `1.18x <worse>`.
fn ratio_words(ratio: f64, better: &str, worse: &str) -> String {
    if ratio.is_finite() && ratio > 0.0 && ratio < 1.0 {
        format!("{} {worse}", times(1.0 / ratio))
    } else {
        format!("{} {better}", times(ratio))
    }
}

/// A speed ratio (FP32 time over ternary time) as `2.10x faster` or `1.18x slower`.
pub fn faster(ratio: f64) -> String {
    ratio_words(ratio, "faster", "slower")
}

/// A memory ratio (FP32 over ternary) as `7.16x less` or `1.03x more`.
pub fn less(ratio: f64) -> String {
    ratio_words(ratio, "less", "more")
}

/// A size ratio (FP32 over ternary) as `17.10x smaller` or `1.30x larger`.
pub fn smaller(ratio: f64) -> String {
    ratio_words(ratio, "smaller", "larger")
}

/// Percentage points with a sign; a zero change is `+0.00 pp`, never `-0.00 pp`.
fn pp(v: f64) -> String {
    let v = if v.abs() < 0.005 { 0.0 } else { v };
    format!("{v:+.2} pp")
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k/s", v / 1e3)
    } else {
        format!("{v:.1} /s")
    }
}

fn accuracy_cell(a: &SideAccuracy) -> String {
    match a {
        SideAccuracy::Measured(c) => pct(c.accuracy),
        SideAccuracy::NotApplicable(_) => "n/a".into(),
    }
}

/// The one-screen summary: FP32, ternary and their ratio or difference.
pub fn summary(r: &Report) -> Section {
    let mut s = Section::new(
        format!("triton bench: {} ({}), -{}", r.model, r.file, r.settings.opt),
        &["", "FP32", "ternary", "ternary vs FP32"],
    );
    let acc = &r.accuracy;
    let macro_f1 = |a: &SideAccuracy| a.measured().map_or("n/a".into(), |c| format!("{:.4}", c.macro_f1));
    s.row(vec![
        "accuracy".into(),
        accuracy_cell(&acc.fp32),
        accuracy_cell(&acc.ternary),
        acc.delta_pp().map_or("n/a".into(), |d| pp(-d)),
    ]);
    let f1_delta = match (acc.fp32.measured(), acc.ternary.measured()) {
        (Some(f), Some(t)) => format!("{:+.4}", t.macro_f1 - f.macro_f1),
        _ => "n/a".into(),
    };
    s.row(vec!["macro-F1".into(), macro_f1(&acc.fp32), macro_f1(&acc.ternary), f1_delta]);
    let all = r.thread_counts().last().copied().unwrap_or(1);
    // The largest batch measured on all threads (larger ones may have been skipped).
    let max_b = r.latency.iter().filter(|c| c.threads == all).map(|c| c.batch).max().unwrap_or(1);
    let mut lat = |threads: usize, batch: usize| {
        let (Some(f), Some(t)) =
            (r.latency_of(Side::Fp32, threads, batch), r.latency_of(Side::Ternary, threads, batch))
        else {
            return;
        };
        s.row(vec![
            format!("latency b{batch}, {threads} thread{} (median)", if threads == 1 { "" } else { "s" }),
            ms(f.stats.median_ms),
            ms(t.stats.median_ms),
            faster(f.stats.median_ms / t.stats.median_ms),
        ]);
    };
    lat(1, 1);
    if (all, max_b) != (1, 1) {
        lat(all, max_b);
    }
    if let (Some(f), Some(t)) = (r.latency_of(Side::Fp32, all, max_b), r.latency_of(Side::Ternary, all, max_b)) {
        s.row(vec![
            format!("throughput b{max_b}, {all} thread{}", if all == 1 { "" } else { "s" }),
            format!("{} img", rate(f.throughput)),
            format!("{} img", rate(t.throughput)),
            times(t.throughput / f.throughput),
        ]);
    }
    let z = &r.size;
    s.row(vec![
        "model size (artifact)".into(),
        bytes(z.fp32_artifact_bytes as u64),
        bytes(z.ternary_artifact_bytes as u64),
        smaller(z.fp32_artifact_bytes as f64 / z.ternary_artifact_bytes.max(1) as f64),
    ]);
    s.row(vec![
        "weights as FP32 / artifact".into(),
        bytes(z.fp32_bytes),
        bytes(z.ternary_artifact_bytes as u64),
        format!("{} compression", times(z.compression)),
    ]);
    for m in r.memory.iter().filter(|m| m.side == Side::Fp32) {
        let t = r.memory.iter().find(|t| t.side == Side::Ternary && t.batch == m.batch);
        if let (Some(fp), Some(tp)) = (&m.inference, t.and_then(|t| t.inference.as_ref())) {
            s.row(vec![
                format!("peak RSS running b{}", m.batch),
                bytes(fp.peak_bytes),
                bytes(tp.peak_bytes),
                less(fp.peak_bytes as f64 / tp.peak_bytes.max(1) as f64),
            ]);
        }
    }
    let comp = |side: Side| r.compile.iter().find(|c| c.side == side && c.opt == r.settings.opt);
    if let (Some(f), Some(t)) = (comp(Side::Fp32), comp(Side::Ternary)) {
        s.row(vec![
            format!("compile, cold / warm cache ({} lines)", t.lines),
            format!("{} / {}", ms(f.cold_ms), ms(f.warm_ms)),
            format!("{} / {}", ms(t.cold_ms), ms(t.warm_ms)),
            format!("cache {} faster", times(t.cache_speedup)),
        ]);
    }
    s.row(vec![
        "parameters".into(),
        count(z.parameters),
        count(z.parameters),
        format!("{} ternary", count(z.ternary_weights)),
    ]);
    for w in &r.weights {
        let what = match (&w.path, &w.trained_precision) {
            (Some(p), Some(tp)) => format!("{p} (trained {tp})"),
            (Some(p), None) => p.clone(),
            (None, _) => format!("seeded initialisation (seed {})", r.settings.seed),
        };
        s.notes.push(format!("{} weights: {what}", w.side.label()));
        if let Some(n) = &w.note {
            s.notes.push(format!("note: {n}"));
        }
    }
    for side in Side::BOTH {
        if let SideAccuracy::NotApplicable(why) = acc.side(side) {
            s.notes.push(format!("{} accuracy not applicable: {why}", side.label()));
        }
    }
    if let Some(d) = &acc.dataset {
        s.notes.push(format!("accuracy on {d}"));
    }
    s.notes.push(format!("machine: {}", r.machine.line()));
    s
}

/// Per-class precision, recall and F1 of both sides.
pub fn per_class(r: &Report) -> Option<Section> {
    let (f, t) = (r.accuracy.fp32.measured()?, r.accuracy.ternary.measured()?);
    let mut s = Section::new(
        "Accuracy per class",
        &[
            "class",
            "support",
            "FP32 acc",
            "FP32 P",
            "FP32 R",
            "FP32 F1",
            "tern acc",
            "tern P",
            "tern R",
            "tern F1",
            "delta acc",
        ],
    );
    for (a, b) in f.per_class.iter().zip(&t.per_class) {
        s.row(vec![
            a.class.to_string(),
            a.support.to_string(),
            pct(a.recall),
            format!("{:.4}", a.precision),
            format!("{:.4}", a.recall),
            format!("{:.4}", a.f1),
            pct(b.recall),
            format!("{:.4}", b.precision),
            format!("{:.4}", b.recall),
            format!("{:.4}", b.f1),
            pp(100.0 * (b.recall - a.recall)),
        ]);
    }
    s.row(vec![
        "all".into(),
        f.examples.to_string(),
        pct(f.accuracy),
        String::new(),
        String::new(),
        format!("macro {:.4}", f.macro_f1),
        pct(t.accuracy),
        String::new(),
        String::new(),
        format!("macro {:.4}", t.macro_f1),
        pp(100.0 * (t.accuracy - f.accuracy)),
    ]);
    s.notes.push("class accuracy is the class's recall; P = precision, R = recall".into());
    Some(s)
}

/// The confusion matrix of one side (rows: true class, columns: predicted).
pub fn confusion(r: &Report, side: Side) -> Option<Section> {
    let c = r.accuracy.side(side).measured()?;
    let n = c.confusion.len();
    let mut header: Vec<String> = vec!["true \\ predicted".into()];
    header.extend((0..n).map(|i| i.to_string()));
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut s = Section::new(format!("Confusion matrix, {}", side.label()), &header_refs);
    for (t, row) in c.confusion.iter().enumerate() {
        let mut cells = vec![t.to_string()];
        cells.extend(row.iter().map(|v| v.to_string()));
        s.row(cells);
    }
    Some(s)
}

/// Every latency case.
pub fn latency(r: &Report) -> Section {
    let mut s = Section::new(
        "Latency per batch size",
        &[
            "side",
            "threads",
            "batch",
            "median",
            "mean ± 95% CI",
            "p95",
            "p99",
            "min",
            "max",
            "per image",
            "throughput",
            "n",
            "speed-up",
        ],
    );
    for c in &r.latency {
        let l = &c.stats;
        let speedup = if c.side == Side::Ternary {
            r.speedup(c.threads, c.batch).map_or("-".into(), times)
        } else {
            String::new()
        };
        s.row(vec![
            c.side.label().into(),
            c.threads.to_string(),
            c.batch.to_string(),
            ms(l.median_ms),
            match l.ci95_ms {
                Some(ci) => format!("{} ± {}", ms(l.mean_ms), ms(ci)),
                None => ms(l.mean_ms),
            },
            ms(l.p95_ms),
            ms(l.p99_ms),
            ms(l.min_ms),
            ms(l.max_ms),
            ms(c.per_example_ms),
            format!("{} img", rate(c.throughput)),
            l.samples.to_string(),
            speedup,
        ]);
    }
    s.notes.push(format!(
        "warm-up {} calls and at least 50 ms (at most a quarter of the case budget), then up to {} timed calls or {:.1} s per case (at least {}); speed-up = FP32 median / ternary median",
        r.settings.warmup,
        r.settings.iters,
        r.settings.max_seconds_per_case,
        super::measure::MIN_SAMPLES
    ));
    s.notes.extend(r.skipped.iter().cloned());
    s
}

/// Size of the model both ways.
pub fn size(r: &Report) -> Section {
    let z = &r.size;
    let mut s = Section::new("Size", &["", "value"]);
    s.row(vec!["parameters".into(), count(z.parameters)]);
    s.row(vec!["ternary weights".into(), count(z.ternary_weights)]);
    s.row(vec!["weights as FP32".into(), bytes(z.fp32_bytes)]);
    s.row(vec!["FP32 artifact".into(), bytes(z.fp32_artifact_bytes as u64)]);
    s.row(vec!["ternary artifact".into(), bytes(z.ternary_artifact_bytes as u64)]);
    s.row(vec!["  of which packed trits".into(), bytes(z.trit_bytes as u64)]);
    s.row(vec!["  of which machine code".into(), bytes(z.code_bytes as u64)]);
    s.row(vec!["compression (FP32 weights / ternary artifact)".into(), times(z.compression)]);
    s
}

/// Peak memory of compiling and running.
pub fn memory(r: &Report) -> Section {
    let mut s = Section::new(
        "Memory",
        &["side", "batch", "compile peak RSS", "compile added", "run peak RSS", "run added", "arena"],
    );
    let peak = |p: &Option<super::Peak>, added: bool| {
        p.as_ref().map_or("n/a".into(), |p| bytes(if added { p.added_bytes } else { p.peak_bytes }))
    };
    for m in &r.memory {
        s.row(vec![
            m.side.label().into(),
            m.batch.to_string(),
            peak(&m.compile, false),
            peak(&m.compile, true),
            peak(&m.inference, false),
            peak(&m.inference, true),
            bytes(m.arena_bytes as u64),
        ]);
    }
    let isolated = r.memory.iter().all(|m| m.isolated);
    s.notes.push(format!(
        "peak RSS of {} during the phase; 'added' is above the RSS when it began; running = loading the artifact and {} calls at that batch size, all threads; arena = scratch buffers kept between calls",
        if isolated { "a process doing only that (the triton binary)" } else { "the benchmarking process" },
        super::RUN_CALLS
    ));
    if r.memory.iter().flat_map(|m| [&m.compile, &m.inference]).flatten().any(|p| !p.exact) {
        s.notes.push("the kernel refused to reset the high-water mark: peaks may predate their phase".into());
    }
    s
}

/// Compile speed and runtime per -O level.
pub fn compile(r: &Report) -> Section {
    let batch = r.compile.first().map_or(1, |c| c.batch);
    let b_col = format!("latency b{batch}");
    let mut s = Section::new(
        "Compile speed and runtime per -O level",
        &["side", "level", "cold", "warm", "cache speed-up", "ms / line", "latency b1", &b_col],
    );
    for c in &r.compile {
        s.row(vec![
            c.side.label().into(),
            format!("-{}", c.opt),
            ms(c.cold_ms),
            ms(c.warm_ms),
            times(c.cache_speedup),
            format!("{:.4}", c.ms_per_line),
            ms(c.latency_b1_ms),
            ms(c.latency_batch_ms),
        ]);
    }
    if let Some(c) = r.compile.first() {
        s.notes.push(format!(
            "{} source lines (standard library included); cold = empty cache folder (median of {}), warm = filled cache folder as a new process sees it (median of {}); latency: one thread, median",
            c.lines, c.cold_samples, c.warm_samples
        ));
    }
    s
}

fn scale_section(title: &str, rows: &[ScaleRow]) -> Section {
    let batch = rows.first().map_or(16, |r| r.batch);
    let (fb, tb, sb) = (format!("FP32 b{batch}"), format!("ternary b{batch}"), format!("speed-up b{batch}"));
    let mut s = Section::new(
        title,
        &[
            "model",
            "params",
            "FP32 weights",
            "ternary artifact",
            "compression",
            "compile",
            "FP32 b1",
            "ternary b1",
            "speed-up b1",
            &fb,
            &tb,
            &sb,
        ],
    );
    for r in rows {
        s.row(vec![
            r.name.clone(),
            count(r.parameters),
            bytes(r.fp32_bytes),
            bytes(r.ternary_artifact_bytes as u64),
            times(r.compression),
            ms(r.compile_ms),
            ms(r.fp32_b1_ms),
            ms(r.ternary_b1_ms),
            times(r.speedup_b1()),
            r.fp32_batch_ms.map_or("-".into(), ms),
            r.ternary_batch_ms.map_or("-".into(), ms),
            r.speedup_batch().map_or("-".into(), times),
        ]);
    }
    s.notes.push("seeded weights; cold ternary compile; median latency on one thread".into());
    s.notes.extend(rows.iter().filter_map(|r| r.skipped.as_ref().map(|why| format!("{}: {why}", r.name))));
    s
}

/// PASS/FAIL against the targets.
pub fn targets(r: &Report) -> Section {
    let mut s = Section::new("Targets", &["target", "figure", "goal", "measured", "result"]);
    for o in &r.targets {
        s.row(vec![
            o.target.name().into(),
            o.target.describe().into(),
            o.goal(),
            o.measured.map_or("n/a".into(), |m| format!("{m:.3}")),
            o.verdict().into(),
        ]);
    }
    s.notes.push("set with --target NAME=VALUE (e.g. --target speedup=3 --target accuracy-drop=0.5)".into());
    s
}

/// The comparison with a baseline.
pub fn comparison(c: &Comparison) -> Section {
    let mut s = Section::new(
        format!("Against baseline {} (threshold {}%, accuracy {} pp)", c.baseline, c.threshold_pct, c.accuracy_pp),
        &["figure", "baseline", "now", "change", ""],
    );
    for ch in &c.changes {
        let flag = if ch.regression {
            "REGRESSION"
        } else if ch.improvement {
            "improved"
        } else {
            ""
        };
        s.row(vec![
            ch.figure.clone(),
            format!("{:.4}", ch.old),
            format!("{:.4}", ch.new),
            format!("{:+.1}%", ch.change_pct),
            flag.into(),
        ]);
    }
    s.notes.extend(c.warnings.iter().map(|w| format!("warning: {w}")));
    let n = c.regressions().count();
    s.notes.push(if n == 0 { "no regressions".into() } else { format!("{n} regression(s)") });
    s
}

/// Every section, in reading order (`confusion`: include the confusion matrices).
pub fn sections(r: &Report, cmp: Option<&Comparison>, confusion_matrices: bool) -> Vec<Section> {
    let mut out = vec![summary(r)];
    out.extend(per_class(r));
    if confusion_matrices {
        out.extend(Side::BOTH.into_iter().filter_map(|s| confusion(r, s)));
    }
    out.push(latency(r));
    out.push(size(r));
    out.push(memory(r));
    out.push(compile(r));
    if let Some(sc) = &r.scaling {
        out.push(scale_section("Scaling: MLP width", &sc.mlp));
        let mut zoo = scale_section("Scaling: the zoo", &sc.zoo);
        zoo.notes.extend(sc.zoo_skipped.iter().map(|(name, why)| format!("{name} skipped: {why}")));
        out.push(zoo);
    }
    out.push(targets(r));
    out.extend(cmp.map(comparison));
    out
}

/// The terminal report.
pub fn terminal(r: &Report, cmp: Option<&Comparison>) -> String {
    sections(r, cmp, false).iter().map(Section::terminal).collect::<Vec<_>>().join("\n")
}

/// The Markdown report (`--report`).
pub fn markdown(r: &Report, cmp: Option<&Comparison>, plots: &[(String, String)]) -> String {
    let m = &r.machine;
    let mut out = format!(
        "# triton bench: {}\n\n`{}`, -{}, measured in {:.1} s on {} ({} cores, {} GiB; features: {}). triton {}, Cranelift {}, {}; kernel {}.\n\n",
        r.model,
        r.file,
        r.settings.opt,
        r.wall_seconds,
        m.cpu,
        m.cores,
        m.memory_gib.map_or("?".into(), |g| format!("{g:.1}")),
        m.features.join(" "),
        m.triton_version,
        m.cranelift_version,
        m.rustc_version,
        m.kernel.as_deref().unwrap_or("?"),
    );
    for s in sections(r, cmp, true) {
        out.push_str(&s.markdown());
        out.push('\n');
    }
    if !plots.is_empty() {
        out.push_str("### Plots\n\n");
        for (title, path) in plots {
            out.push_str(&format!("![{title}]({path})\n\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(ms(123.4), "123 ms");
        assert_eq!(ms(12.34), "12.3 ms");
        assert_eq!(ms(1.234), "1.23 ms");
        assert_eq!(ms(0.1234), "0.123 ms");
        assert_eq!(ms(0.001234), "1.23 µs");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
        assert_eq!(times(17.456), "17.46x");
        assert_eq!(times(250.0), "250x");
        assert_eq!(smaller(17.1), "17.10x smaller");
        assert_eq!(smaller(0.5), "2.00x larger");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(rate(2500.0), "2.5 k/s");
        assert_eq!(faster(2.5), "2.50x faster");
        assert_eq!(faster(0.8), "1.25x slower");
        assert_eq!(less(0.8), "1.25x more");
        assert_eq!(less(7.0), "7.00x less");
        assert_eq!(pp(-0.0), "+0.00 pp");
        assert_eq!(pp(-0.26), "-0.26 pp");
    }

    #[test]
    fn sections_draw_the_same_cells_both_ways() {
        let mut s = Section::new("T", &["a", "b"]);
        s.row(vec!["x".into(), "1.00 ms".into()]);
        s.notes.push("n".into());
        let md = s.markdown();
        assert!(md.starts_with("### T\n\n| a "), "{md}");
        assert!(md.contains("| x ") && md.contains("1.00 ms |") && md.contains("- n"), "{md}");
        let term = s.terminal();
        assert!(term.contains("1.00 ms") && term.contains("  n"), "{term}");
    }
}
