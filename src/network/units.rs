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

#[cfg(test)]
mod tests {
    use super::*;

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
