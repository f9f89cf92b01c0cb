//! Values against types, shared by programs, devices, routes and tests:
//! E027 (type mismatch), E012 (a number too large), E015 (a VLAN id above
//! 4095); and types and values in words for messages.

use super::*;

impl Checker {
    /// Reports a value of type `ty` that cannot go where `expected` is
    /// wanted. `field` picks the VLAN-specific code; `place` names the
    /// destination.
    pub(super) fn fits(
        &mut self,
        value: &Value,
        ty: Ty,
        expected: Ty,
        field: Field,
        place: impl Fn() -> String,
    ) -> Option<()> {
        match (ty, expected) {
            (Ty::Uint { max: n }, Ty::Uint { max }) if matches!(value.kind, ValueKind::Int(_)) && n > max => {
                let (code, help) = if field == Field::VlanId {
                    (Code::VlanIdRange, "a VLAN id is 0 to 4095 (12 bits)".to_string())
                } else {
                    (Code::OutOfRange, format!("{} is at most {max}", place()))
                };
                self.error(
                    Diagnostic::new(code, value.span, format!("{n} does not fit in {}", place()))
                        .label(format!("above {max}"))
                        .help(help),
                );
                None
            }
            _ if ty.fits_in(expected) => Some(()),
            _ => {
                self.error(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        value.span,
                        format!("{} holds {}, not {}", place(), ty_words(expected), describe_ty(value, ty)),
                    )
                    .label(format!("expected {}", ty_words(expected)))
                    .help(format!("give {} {}", place(), ty_words(expected))),
                );
                None
            }
        }
    }

    /// A literal as a constant.
    pub(super) fn constant(&mut self, value: &Value) -> Option<Const> {
        Some(match &value.kind {
            ValueKind::Int(int) => Const::Uint(int.value),
            ValueKind::Mac(mac) => Const::Mac(*mac),
            ValueKind::Ipv4(a) => Const::Ipv4(*a),
            ValueKind::Ipv6(a) => Const::Ipv6(*a),
            other => {
                self.error(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        value.span,
                        format!("expected a number or an address, found {}", other.describe()),
                    )
                    .label("not a constant")
                    .help("write a number, a MAC, an IPv4 or an IPv6 address"),
                );
                return None;
            }
        })
    }
}

/// A type as met in a diagnostic: literals by their kind, others by type.
/// A type in words, for messages: "an IPv4 address", "a number 0..=4095".
pub(super) fn ty_words(ty: Ty) -> String {
    match ty {
        Ty::Uint { max } => format!("a number 0..={max}"),
        Ty::Mac => "a MAC address".into(),
        Ty::Ipv4 => "an IPv4 address".into(),
        Ty::Ipv6 => "an IPv6 address".into(),
        Ty::Device => "a device name".into(),
    }
}

pub(super) fn describe_ty(value: &Value, ty: Ty) -> String {
    match (&value.kind, ty) {
        (ValueKind::Path(p), ty) => format!("`{}` ({ty})", p.dotted()),
        (kind, _) => kind.describe().to_string(),
    }
}
