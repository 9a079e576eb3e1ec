//! Layered (Sugiyama-style) drawing of a DAG, top to bottom: ranks by longest path from the
//! sources, order within a rank by barycentre sweeps (fewer crossings), and x positions pulled
//! toward each box's neighbours while keeping boxes apart.

/// Where a box goes: its rank (row) and the x of its centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    pub rank: usize,
    pub x: f32,
}

/// Horizontal gap between boxes of one rank.
pub const GAP: f32 = 24.0;

/// Lays out boxes `0..widths.len()` joined by `edges` (from, to). Returns `None` when the edges
/// contain a cycle. The leftmost box edge is at x = 0.
pub fn layered(widths: &[f32], edges: &[(usize, usize)]) -> Option<Vec<Placed>> {
    let n = widths.len();
    let mut preds = vec![Vec::new(); n];
    let mut succs = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a != b && !succs[a].contains(&b) {
            succs[a].push(b);
            preds[b].push(a);
        }
    }
    let order = topological(&preds, &succs)?;
    let mut rank = vec![0usize; n];
    for &v in &order {
        rank[v] = preds[v].iter().map(|&p| rank[p] + 1).max().unwrap_or(0);
    }
    let ranks = rank.iter().max().map_or(0, |r| r + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); ranks];
    for &v in &order {
        rows[rank[v]].push(v);
    }
    order_rows(&mut rows, &preds, &succs);
    let x = place(&rows, widths, &preds, &succs);
    Some(
        (0..n)
            .map(|v| Placed {
                rank: rank[v],
                x: x[v],
            })
            .collect(),
    )
}

/// Kahn's algorithm, stable in index order; `None` on a cycle.
fn topological(preds: &[Vec<usize>], succs: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut indegree: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..preds.len()).filter(|&v| indegree[v] == 0).collect();
    let mut order = Vec::with_capacity(preds.len());
    while let Some(v) = ready.pop_first() {
        order.push(v);
        for &s in &succs[v] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.insert(s);
            }
        }
    }
    (order.len() == preds.len()).then_some(order)
}

/// The ranks a sweep visits: downward from the second, or upward from the second to last.
fn sweep_order(ranks: usize, down: bool) -> Vec<usize> {
    if down {
        (1..ranks).collect()
    } else {
        (0..ranks.saturating_sub(1)).rev().collect()
    }
}

/// The mean of `values` over `adj`, or `own` when there are no neighbours.
fn neighbour_mean(adj: &[usize], values: &[f32], own: f32) -> f32 {
    if adj.is_empty() {
        own
    } else {
        adj.iter().map(|&u| values[u]).sum::<f32>() / adj.len() as f32
    }
}

/// Barycentre ordering: alternate downward sweeps (by predecessors' positions) and upward
/// sweeps (by successors').
fn order_rows(rows: &mut [Vec<usize>], preds: &[Vec<usize>], succs: &[Vec<usize>]) {
    let n = preds.len();
    let mut pos = vec![0f32; n];
    let index = |rows: &[Vec<usize>], pos: &mut [f32]| {
        for row in rows {
            for (i, &v) in row.iter().enumerate() {
                pos[v] = i as f32;
            }
        }
    };
    index(rows, &mut pos);
    for sweep in 0..8 {
        let down = sweep % 2 == 0;
        for r in sweep_order(rows.len(), down) {
            let key = |v: usize| {
                let adj = if down { &preds[v] } else { &succs[v] };
                neighbour_mean(adj, &pos, pos[v])
            };
            let mut keyed: Vec<(f32, usize)> = rows[r].iter().map(|&v| (key(v), v)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            rows[r] = keyed.into_iter().map(|(_, v)| v).collect();
            for (i, &v) in rows[r].iter().enumerate() {
                pos[v] = i as f32;
            }
        }
    }
}

/// x of each box centre: each row packed in its order, then pulled toward the mean x of the
/// neighbours in the row above (downward passes) or below (upward passes).
fn place(
    rows: &[Vec<usize>],
    widths: &[f32],
    preds: &[Vec<usize>],
    succs: &[Vec<usize>],
) -> Vec<f32> {
    let mut x = vec![0f32; widths.len()];
    for row in rows {
        let mut left = 0.0;
        for &v in row {
            x[v] = left + widths[v] / 2.0;
            left += widths[v] + GAP;
        }
    }
    for pass in 0..6 {
        let down = pass % 2 == 0;
        for r in sweep_order(rows.len(), down) {
            let row = &rows[r];
            let desired: Vec<f32> = row
                .iter()
                .map(|&v| {
                    let adj = if down { &preds[v] } else { &succs[v] };
                    neighbour_mean(adj, &x, x[v])
                })
                .collect();
            // Left to right at the desired places or just right of the previous box, then shift
            // the row so it sits, on average, where it wanted to be.
            let mut placed = Vec::with_capacity(row.len());
            for (i, &v) in row.iter().enumerate() {
                let min = if i == 0 {
                    f32::NEG_INFINITY
                } else {
                    let u = row[i - 1];
                    placed[i - 1] + (widths[u] + widths[v]) / 2.0 + GAP
                };
                placed.push(desired[i].max(min));
            }
            let shift =
                desired.iter().zip(&placed).map(|(d, p)| d - p).sum::<f32>() / row.len() as f32;
            for (i, &v) in row.iter().enumerate() {
                x[v] = placed[i] + shift;
            }
        }
    }
    let left = (0..widths.len())
        .map(|v| x[v] - widths[v] / 2.0)
        .fold(f32::INFINITY, f32::min);
    if left.is_finite() {
        for v in &mut x {
            *v -= left;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_longest_paths_and_boxes_never_overlap() {
        // a → b → d, a → c → d, a → d, plus a wide fan-out from d.
        let widths = vec![100.0; 8];
        let edges = [
            (0, 1),
            (1, 3),
            (0, 2),
            (2, 3),
            (0, 3),
            (3, 4),
            (3, 5),
            (3, 6),
            (3, 7),
        ];
        let p = layered(&widths, &edges).unwrap();
        assert_eq!(
            p.iter().map(|p| p.rank).collect::<Vec<_>>(),
            [0, 1, 1, 2, 3, 3, 3, 3]
        );
        for a in 0..8 {
            for b in a + 1..8 {
                if p[a].rank == p[b].rank {
                    assert!(
                        (p[a].x - p[b].x).abs() >= 100.0 + GAP - 1e-3,
                        "{a} {b} {p:?}"
                    );
                }
            }
        }
        assert!(p.iter().all(|p| p.x >= 50.0 - 1e-3));
    }

    #[test]
    fn a_chain_is_a_straight_column() {
        let p = layered(&[80.0, 120.0, 80.0], &[(0, 1), (1, 2)]).unwrap();
        assert!(
            (p[0].x - p[1].x).abs() < 1e-3 && (p[1].x - p[2].x).abs() < 1e-3,
            "{p:?}"
        );
    }

    #[test]
    fn cycles_are_refused() {
        assert!(layered(&[1.0, 1.0], &[(0, 1), (1, 0)]).is_none());
    }

    #[test]
    fn barycentre_ordering_uncrosses_a_swapped_pair() {
        // Sources 0, 1; 0 → 3, 1 → 2: the second row should read 3, 2.
        let p = layered(&[10.0; 4], &[(0, 3), (1, 2)]).unwrap();
        assert!(p[3].x < p[2].x, "{p:?}");
    }
}
