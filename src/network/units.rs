//! Where a layer's units are: the one declaration of how an activation's shape holds them.
//!
//! A unit is a channel. Every technique reads activations as `[N, C, H, W]`
//! ([`DynTensor::to_nchw`](super::DynTensor::to_nchw)), and the layer card, the graph and the
//! gallery count units with [`UnitLayout::units`]; both follow this table:
//!
//! | output        | layout              | units | viewed as           |
//! |---------------|---------------------|-------|---------------------|
//! | `[N, C, H, W]`| feature maps        | `C`   | itself              |
//! | `[N, C]`      | features, logits    | `C`   | `[N, C, 1, 1]`      |
//! | `[N, T, C]`   | tokens (ViT, Swin)  | `C`   | `[N, C, T, 1]`      |
//!
//! A rank-3 output of a vision network is read as tokens, as vision transformers' exports
//! write them (`[batch, tokens, channels]`), never as a 1-D convolution's `[N, C, L]`. Viewing
//! tokens as a `T × 1` map makes every spatial reading mean a reading over tokens: a channel's
//! mean is its mean over tokens (class token included), and a "neuron" is the middle token.
//! Rank-4 outputs are always channels-first: the channels-last inside of a ConvNeXt block or a
//! Swin stage (`[N, H, W, C]`) cannot be told apart by shape, and counts `H` units.
//!
//! A unit's map is read as it is, but for one kind of layer ([`Reading`]): a softmax over the
//! map's own axes, such as a transformer's attention weights `[N, heads, queries, keys]`, whose
//! every row sums to 1. Its mean is the same for every image (1 / keys), so a unit is read by
//! how concentrated its distributions are instead.
//!
//! Where tokens lie on the image is [`TokenGrid`]'s to say: the patch grid their count fits.
//! Dataset examples draw a token unit's and a head's heatmaps over it.

/// How an activation holds a layer's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitLayout {
    /// `[N, C, H, W]`: convolutional feature maps.
    Maps,
    /// `[N, C]`: fully connected features and logits.
    Features,
    /// `[N, T, C]`: a vision transformer's tokens.
    Tokens,
}

impl UnitLayout {
    /// The layout of an output of shape `shape`, if it has units.
    pub fn of(shape: &[usize]) -> Option<UnitLayout> {
        match shape.len() {
            4 => Some(UnitLayout::Maps),
            2 => Some(UnitLayout::Features),
            3 => Some(UnitLayout::Tokens),
            _ => None,
        }
    }

    /// The axis that holds the units.
    pub fn unit_axis(self) -> usize {
        match self {
            UnitLayout::Maps | UnitLayout::Features => 1,
            UnitLayout::Tokens => 2,
        }
    }

    /// The number of units of an output of shape `shape`: 0 when it has none.
    pub fn units(shape: &[usize]) -> usize {
        Self::of(shape).map_or(0, |l| shape[l.unit_axis()])
    }

    /// The `[N, C, H, W]` shape an output of shape `shape` is viewed as, if it has units.
    pub fn nchw(shape: &[usize]) -> Option<[usize; 4]> {
        let s = shape;
        Some(match Self::of(shape)? {
            UnitLayout::Maps => [s[0], s[1], s[2], s[3]],
            UnitLayout::Features => [s[0], s[1], 1, 1],
            UnitLayout::Tokens => [s[0], s[2], s[1], 1],
        })
    }
}

/// How a layer's values are read as its units' maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// As they are.
    Values,
    /// A softmax's output, over axis `axis` (negative: from the end) or, for `joint`, over every
    /// axis from `axis` on (Softmax before opset 13).
    Softmax { axis: i64, joint: bool },
}

impl Reading {
    /// Where the unit maps of an output of shape `dims` hold whole distributions (a softmax
    /// over axes that are neither the batch's nor the units'), the number of values each
    /// spans. Such a map's mean is the same for every input: a unit is then read by the map
    /// of its squared values times that number, whose mean is `Σ p²` per distribution,
    /// averaged: 1 / span for even weights, 1 when each distribution is one value.
    pub fn span(self, dims: &[usize]) -> Option<usize> {
        let Reading::Softmax { axis, joint } = self else {
            return None;
        };
        let layout = UnitLayout::of(dims)?;
        let rank = dims.len() as i64;
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return None;
        }
        let axes = match joint {
            true => axis as usize..dims.len(),
            false => axis as usize..axis as usize + 1,
        };
        if axes.contains(&0) || axes.contains(&layout.unit_axis()) {
            return None;
        }
        Some(dims[axes].iter().product())
    }

    /// What a unit's value is for an output of shape `dims`, where it is not its map's mean.
    pub fn note(self, dims: &[usize]) -> Option<String> {
        let span = self.span(dims)?;
        Some(format!(
            "a unit's value is how concentrated its softmax weights are: the sum of their \
             squares over each distribution of {span}, averaged (1/{span} when spread evenly, 1 \
             when all on one)"
        ))
    }
}

/// Where a token layer's tokens lie on the input: a vision transformer's patch grid.
///
/// Exports write the patch tokens row by row after a few others (a class token, a distillation
/// token, registers). From the number of tokens and the input's size alone, the grid is the one
/// whose square patches tile the input exactly: `skip` leading tokens (one of
/// [`TokenGrid::LEADING`]), then `rows × cols` patches of `p × p` pixels, `rows·p = H` and
/// `cols·p = W`; the fewest leading tokens that give one win.
/// ViT-B/16 at 224 px: 197 tokens, 1 + 14 × 14; DINOv2 with 4 registers: 261, 5 + 16 × 16; a
/// Swin stage at 7 × 7: 49, no leading token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrid {
    /// Tokens before the patches.
    pub skip: usize,
    pub rows: usize,
    pub cols: usize,
}

impl TokenGrid {
    /// The leading tokens looked for: none; a class token; a class and a distillation token
    /// (DeiT); a class token and 4, 8 or 16 registers. Any count would find a grid in some
    /// token counts by chance (7 tokens: 3, then 2 × 2 patches).
    pub const LEADING: [usize; 6] = [0, 1, 2, 5, 9, 17];

    /// The grid of `tokens` tokens over an input of `height × width` pixels, if one tiles it.
    pub fn of(tokens: usize, height: usize, width: usize) -> Option<TokenGrid> {
        let area = height.checked_mul(width)?;
        if tokens == 0 {
            return None;
        }
        Self::LEADING.iter().find_map(|&skip| {
            let patches = tokens.checked_sub(skip).filter(|&p| p > 0)?;
            if !area.is_multiple_of(patches) {
                return None;
            }
            let p2 = area / patches;
            let p = (p2 as f64).sqrt().round() as usize;
            (p > 0 && p * p == p2 && height.is_multiple_of(p) && width.is_multiple_of(p)).then_some(
                TokenGrid {
                    skip,
                    rows: height / p,
                    cols: width / p,
                },
            )
        })
    }

    /// The patches' values, row by row, of one value per token.
    pub fn patches<'a>(&self, per_token: &'a [f32]) -> Option<&'a [f32]> {
        per_token.get(self.skip..self.skip + self.rows * self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_count_finds_the_patch_grid_that_tiles_the_input() {
        let grid = |skip, rows, cols| Some(TokenGrid { skip, rows, cols });
        assert_eq!(TokenGrid::of(197, 224, 224), grid(1, 14, 14)); // ViT-B/16
        assert_eq!(TokenGrid::of(50, 224, 224), grid(1, 7, 7)); // ViT-B/32
        assert_eq!(TokenGrid::of(198, 224, 224), grid(2, 14, 14)); // DeiT, distilled
        assert_eq!(TokenGrid::of(261, 224, 224), grid(5, 16, 16)); // DINOv2, 4 registers
        assert_eq!(TokenGrid::of(49, 224, 224), grid(0, 7, 7)); // Swin's last stage
        assert_eq!(TokenGrid::of(17, 32, 32), grid(1, 4, 4));
        assert_eq!(TokenGrid::of(1 + 8 * 16, 128, 256), grid(1, 8, 16));
        assert_eq!(TokenGrid::of(9 + 256, 224, 224), grid(9, 16, 16)); // 8 registers
                                                                       // No square patches tile the input: no grid.
        assert_eq!(TokenGrid::of(7, 224, 224), None);
        assert_eq!(TokenGrid::of(0, 224, 224), None);
        assert_eq!(TokenGrid::of(197, usize::MAX, 2), None);
        let g = TokenGrid::of(17, 32, 32).unwrap();
        let values: Vec<f32> = (0..17).map(|v| v as f32).collect();
        assert_eq!(g.patches(&values).unwrap()[0], 1.0);
        assert_eq!(g.patches(&values[..10]), None);
    }

    /// Attention weights `[N, heads, queries, keys]` (softmax over the keys) are read by their
    /// concentration; a softmax over the units (classes, a segmentation's classes per pixel) or
    /// over token rows `[N, T, T]` (units: keys, a key's mean: the attention it receives) as
    /// they are.
    #[test]
    fn a_softmax_over_a_units_own_map_spans_its_distributions() {
        let softmax = |axis, joint| Reading::Softmax { axis, joint };
        assert_eq!(softmax(-1, false).span(&[2, 4, 17, 17]), Some(17));
        assert_eq!(softmax(2, false).span(&[2, 4, 17, 9]), Some(17));
        assert_eq!(softmax(2, true).span(&[2, 4, 17, 9]), Some(153));
        assert_eq!(softmax(1, false).span(&[2, 21, 8, 8]), None);
        assert_eq!(softmax(1, true).span(&[2, 21, 8, 8]), None);
        assert_eq!(softmax(-1, false).span(&[2, 1000]), None);
        assert_eq!(softmax(-1, false).span(&[2, 17, 17]), None);
        assert_eq!(softmax(1, false).span(&[2, 17, 17]), Some(17));
        assert_eq!(softmax(0, false).span(&[2, 4, 17, 17]), None);
        assert_eq!(softmax(7, false).span(&[2, 4, 17, 17]), None);
        assert_eq!(Reading::Values.span(&[2, 4, 17, 17]), None);
    }

    #[test]
    fn units_sit_on_the_channel_axis_of_each_layout() {
        assert_eq!(UnitLayout::units(&[1, 64, 7, 7]), 64);
        assert_eq!(UnitLayout::units(&[1, 1000]), 1000);
        assert_eq!(UnitLayout::units(&[1, 197, 768]), 768);
        assert_eq!(UnitLayout::units(&[1, 2, 3, 4, 5]), 0);
        assert_eq!(UnitLayout::units(&[10]), 0);
        assert_eq!(UnitLayout::nchw(&[2, 197, 768]), Some([2, 768, 197, 1]));
        assert_eq!(UnitLayout::nchw(&[2, 10]), Some([2, 10, 1, 1]));
    }
}
