//! Engine tests with small synthetic nodes: arcs, scatter, feature arcs, errors, trace layout.

use vecnet_graph::*;

/// Runtime of the test graph: packets to inject and the list of features enabled.
#[derive(Default)]
struct Rt {
    rx: Vec<Vec<u8>>,
    features: Vec<u32>,
    sent: Vec<(String, Vec<u8>)>,
}

struct Input;
impl Node<Rt> for Input {
    fn name(&self) -> &str {
        "test-input"
    }
    fn kind(&self) -> NodeKind {
        NodeKind::Input
    }
    fn next_nodes(&self) -> Vec<String> {
        vec!["missing-node".into(), "classify".into()]
    }
    fn process(&mut self, _: &mut Rt, _: &mut NodeCtx<'_>, _: &[u32], _: &mut [u16]) {}
    fn poll(
        &mut self,
        rt: &mut Rt,
        ctx: &mut NodeCtx<'_>,
        frame: &mut [u32],
        nexts: &mut [u16],
    ) -> usize {
        let mut n = 0;
        while n < frame.len() && !rt.rx.is_empty() {
            let pkt = rt.rx.remove(0);
            let Some(bi) = ctx.pool.alloc() else { break };
            ctx.pool.write_packet(bi, &pkt);
            let node = ctx.node_index;
            ctx.trace.maybe_start(node, ctx.pool.meta_mut(bi));
            ctx.trace(bi, &[pkt.len() as u8]);
            frame[n] = bi;
            nexts[n] = 1;
            n += 1;
        }
        n
    }
    fn format_trace(&self, d: &[u8], _: &dyn FormatContext, out: &mut String) {
        out.push_str(&format!("  len {}\n", d[0]));
    }
}

/// Sends even first bytes to the feature arc, odd ones to drop with an error.
struct Classify;
impl Node<Rt> for Classify {
    fn name(&self) -> &str {
        "classify"
    }
    fn error_strings(&self) -> &'static [&'static str] {
        &["odd packet"]
    }
    fn next_nodes(&self) -> Vec<String> {
        vec!["error-drop".into()]
    }
    fn process(&mut self, rt: &mut Rt, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            if ctx.pool.data(bi)[0] % 2 == 1 {
                let e = ctx.error(0);
                ctx.pool.meta_mut(bi).error = e;
                *next = 0;
            } else {
                ctx.pool.meta_mut(bi).feature_cursor = 0;
                *next = ctx.arc_to_node(rt.features[0]).unwrap();
            }
            ctx.trace(bi, &[0u8]);
        }
    }
    fn format_trace(&self, _: &[u8], _: &dyn FormatContext, out: &mut String) {
        out.push_str("  classified\n");
    }
}

/// A feature that bumps byte 1 and passes to the next feature on the arc.
struct Feature(&'static str);
impl Node<Rt> for Feature {
    fn name(&self) -> &str {
        self.0
    }
    fn process(&mut self, rt: &mut Rt, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            ctx.pool.data_mut(bi)[1] += 1;
            let m = ctx.pool.meta_mut(bi);
            m.feature_cursor += 1;
            let target = rt.features[m.feature_cursor as usize];
            *next = ctx.arc_to_node(target).unwrap();
        }
    }
    fn format_trace(&self, _: &[u8], _: &dyn FormatContext, _: &mut String) {}
}

struct Output;
impl Node<Rt> for Output {
    fn name(&self) -> &str {
        "out-output"
    }
    fn process(&mut self, rt: &mut Rt, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        for (&bi, next) in frame.iter().zip(nexts.iter_mut()) {
            rt.sent.push(("out".into(), ctx.pool.data(bi).to_vec()));
            ctx.pool.free(bi);
            *next = CONSUMED;
        }
    }
    fn format_trace(&self, _: &[u8], _: &dyn FormatContext, _: &mut String) {}
}

struct NoNames;
impl FormatContext for NoNames {
    fn interface_name(&self, _: u32) -> Option<&str> {
        None
    }
}

fn build() -> (Graph<Rt>, Rt, u32, u32, u32) {
    let mut g: Graph<Rt> = Graph::new(Clock::virtual_at(0, 1_000));
    let input = g.add_node(Box::new(Input)).unwrap();
    let classify = g.add_node(Box::new(Classify)).unwrap();
    let f1 = g.add_node(Box::new(Feature("feat-a"))).unwrap();
    let f2 = g.add_node(Box::new(Feature("feat-b"))).unwrap();
    let out = g.add_node(Box::new(Output)).unwrap();
    g.connect_feature_arc(classify, &[f1, f2], out).unwrap();
    // Only feat-b is enabled on this "interface".
    let rt = Rt {
        features: vec![f2, out],
        ..Default::default()
    };
    let _ = f1;
    (g, rt, input, classify, out)
}

#[test]
fn arcs_resolve_and_placeholders_drop() {
    let (mut g, _, input, classify, _) = build();
    // The missing node resolves to error-drop; the later-registered classify resolves to itself.
    assert_eq!(
        g.next_names(input),
        &["missing-node".to_string(), "classify".to_string()]
    );
    assert_eq!(g.arc(input, classify), Some(1));
    assert!(g.add_node(Box::new(Classify)).is_err());
}

#[test]
fn scatter_features_errors_and_trace() {
    let (mut g, mut rt, input, _, _) = build();
    let mut pool = BufferPool::new(64);
    let mut trace = TraceStore::new(100);
    trace.add_quota(input, 2);
    rt.rx = (0..10u8).map(|i| vec![i, 100, 0, 0]).collect();
    let n = g.run_once(&mut rt, &mut pool, &mut trace);
    assert_eq!(n, 10);
    // Evens passed feat-b (byte 1 bumped once), odds dropped and counted.
    assert_eq!(rt.sent.len(), 5);
    assert!(rt.sent.iter().all(|(_, p)| p[0] % 2 == 0 && p[1] == 101));
    assert_eq!(g.error_count("classify", "odd packet"), 5);
    assert_eq!(pool.free_count(), 64, "every buffer returned");
    let s = g.show_trace(0, &trace, &NoNames, 50);
    let expect = "------------------- Start of thread 0 vpp_main -------------------\n\
Packet 1\n\n00:00:00:000000: test-input\n  len 4\n00:00:00:000001: classify\n  classified\n\n\
Packet 2\n\n00:00:00:000000: test-input\n  len 4\n00:00:00:000001: classify\n  classified\n\
00:00:00:000004: error-drop\n  classify: odd packet\n\n";
    assert_eq!(s, expect);
    let limited = g.show_trace(0, &trace, &NoNames, 1);
    assert!(limited.ends_with("Limiting display to 1 packets. To display more specify max.\n"));
    let rtm = g.show_runtime(0, 1.0);
    assert!(rtm.contains("classify"), "{rtm}");
    let cls = g.node_index("classify").unwrap();
    assert_eq!(g.stats(cls).vectors, 10);
    assert_eq!(g.stats(cls).calls, 1);
    assert!(g.show_errors().contains("odd packet"));
    trace.clear();
    assert!(g
        .show_trace(0, &trace, &NoNames, 50)
        .ends_with("No packets in trace buffer\n"));
}

#[test]
fn frames_larger_than_a_vector_are_split() {
    let (mut g, mut rt, _, classify, _) = build();
    let mut pool = BufferPool::new(1024);
    let mut bis = Vec::new();
    for _ in 0..600 {
        let bi = pool.alloc().unwrap();
        pool.write_packet(bi, &[2, 0]);
        bis.push(bi);
    }
    g.enqueue(classify, &bis);
    let mut trace = TraceStore::new(1);
    g.drain(&mut rt, &mut pool, &mut trace);
    assert_eq!(rt.sent.len(), 600);
    assert_eq!(g.stats(classify).calls, 3, "600 packets = 256 + 256 + 88");
}
