//! The declarative macros behind the catalogue. Each message and list item is written once, as
//! a table of fields in wire order; the macros derive the type, its encoder and its decoder
//! from that one table, so the encoder and the decoder cannot disagree about field order.
//!
//! A field is `name: Type` when the type has one encoding of its own (see
//! [`Field`](super::field::Field)), or `name: Type [codec]` when the encoding needs a parameter,
//! such as a string's byte limit: `text: String [Text(MAX_TEXT)]`.

/// The codec given in brackets after a field's type, or `Plain` (the type's own encoding).
macro_rules! codec {
    () => {
        $crate::msg::field::Plain
    };
    ($codec:expr) => {
        $codec
    };
}

/// `req_of!(field field ...)`: `Some(request id)` when the first field is named `req`, else
/// `None`. Requests and their replies put `req` first by convention, and this is where the
/// convention pays: the request id is found without a hand-written match over every variant.
macro_rules! req_of {
    () => {
        None
    };
    ($first:ident $($rest:ident)*) => {
        req_of!(@ $first $first)
    };
    (@ req $req:ident) => {
        $crate::msg::field::AsReq::as_req($req)
    };
    (@ $other:ident $unused:ident) => {
        None
    };
}

/// A struct that appears inside messages (usually in lists): the type, its `Field` encoding,
/// and the smallest size it can have on the wire, which bounds list counts on decode.
/// `$prefix` names the struct in decode errors: `device.name`, `message.text`.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $Name:ident($prefix:literal, min_len $min:expr) {
            $( $(#[$fmeta:meta])* pub $field:ident : $Ty:ty $([$codec:expr])? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $Name {
            $( $(#[$fmeta])* pub $field: $Ty, )+
        }

        impl $crate::msg::field::Field for $Name {
            fn put(&self, w: &mut $crate::wire::Writer<'_>) {
                $( $crate::msg::field::Codec::write(&codec!($($codec)?), w, &self.$field); )+
            }

            fn get(
                r: &mut $crate::wire::Reader<'_>,
                _field: &'static str,
            ) -> Result<Self, $crate::wire::WireError> {
                Ok($Name {
                    $(
                        $field: $crate::msg::field::Codec::read(
                            &codec!($($codec)?),
                            r,
                            concat!($prefix, ".", stringify!($field)),
                        )?,
                    )+
                })
            }
        }

        impl $crate::msg::field::Item for $Name {
            const MIN_LEN: usize = $min;
        }
    };
}

/// One direction's message enum: `kind name { fields }` or `kind name(binding: Type)` per
/// variant, plus the one reserved kind of that direction.
macro_rules! catalogue {
    (
        $(#[$meta:meta])*
        pub enum $Enum:ident {
            $(
                $(#[$vmeta:meta])*
                $kind:literal $Var:ident
                    $( { $( $(#[$fmeta:meta])* $field:ident : $Ty:ty $([$codec:expr])? ),* $(,)? } )?
                    $( ( $bind:ident : $Inner:ty ) )?
            ),+ $(,)?
        }
        reserved $reserved:literal $Reserved:ident;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $Enum {
            $(
                $(#[$vmeta])*
                $Var $( { $( $(#[$fmeta])* $field: $Ty, )* } )? $( ($Inner) )?,
            )+
        }

        impl $Enum {
            /// Every kind of this direction and its name, in catalogue order.
            pub const KINDS: &'static [(u16, &'static str)] = &[$( ($kind, stringify!($Var)) ),+];

            /// The kind this direction reserves for sealed (end-to-end encrypted) bodies, and
            /// its name. Decoding it gives [`MsgError::Reserved`](super::MsgError::Reserved).
            pub const RESERVED: (u16, &'static str) = ($reserved, stringify!($Reserved));

            /// The u16 that starts this message on the wire.
            pub fn kind(&self) -> u16 {
                match self {
                    $( Self::$Var { .. } => $kind, )+
                }
            }

            /// The variant's name, for logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Self::$Var { .. } => stringify!($Var), )+
                }
            }

            /// The request id this message carries: a request's own id, or the id a reply
            /// answers. `None` for pushes, pings and an `Error` not tied to a request.
            #[allow(unused_variables)] // every field is bound, only `req` is used
            pub fn request_id(&self) -> Option<$crate::msg::RequestId> {
                match self {
                    $( Self::$Var $( { $($field),* } )? $( ($bind) )? => req_of!($( $($field)* )?), )+
                }
            }

            /// Appends the message: its kind, then its fields in order.
            ///
            /// Values must be within their limits (the decoder's limits); that is the caller's
            /// contract, checked by debug assertions. Everything decoded from a peer already is.
            pub fn encode(&self, out: &mut Vec<u8>) {
                let mut w = $crate::wire::Writer::new(out);
                w.u16(self.kind());
                match self {
                    $(
                        Self::$Var $( { $($field),* } )? $( ($bind) )? => {
                            $( $( $crate::msg::field::Codec::write(&codec!($($codec)?), &mut w, $field); )* )?
                            $( $crate::msg::field::Codec::write(&$crate::msg::field::Plain, &mut w, $bind); )?
                        }
                    )+
                }
            }

            /// Decodes exactly one message from a record's plaintext. Total: any input gives a
            /// message or an error, and trailing bytes are an error.
            pub fn decode(bytes: &[u8]) -> Result<Self, $crate::msg::MsgError> {
                let mut r = $crate::wire::Reader::new(bytes);
                let kind = r.u16("kind")?;
                let msg = match kind {
                    $(
                        $kind => Self::$Var
                            $( {
                                $(
                                    $field: $crate::msg::field::Codec::read(
                                        &codec!($($codec)?),
                                        &mut r,
                                        stringify!($field),
                                    )?,
                                )*
                            } )?
                            $( (
                                $crate::msg::field::Codec::read(
                                    &$crate::msg::field::Plain,
                                    &mut r,
                                    stringify!($bind),
                                )?
                            ) )?,
                    )+
                    $reserved => return Err($crate::msg::MsgError::Reserved(kind)),
                    _ => return Err($crate::msg::MsgError::UnknownKind(kind)),
                };
                r.finish()?;
                Ok(msg)
            }
        }
    };
}

/// A one-byte enum on the wire: the Rust enum, `to_u8`/`from_u8`, a stable lower-case name
/// for people and JSON, and its `Field` encoding, where an unknown byte is
/// `WireError::Invalid` rather than a guess.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $Name:ident {
            $( $(#[$vmeta:meta])* $Var:ident = $val:literal $name:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $Name {
            $( $(#[$vmeta])* $Var = $val, )+
        }

        impl $Name {
            /// Every value, in wire order.
            pub const ALL: &'static [$Name] = &[$( $Name::$Var ),+];

            pub fn to_u8(self) -> u8 {
                self as u8
            }

            pub fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $( $val => Some($Name::$Var), )+
                    _ => None,
                }
            }

            /// The stable lower-case name (`"online"`), for display and machine output.
            pub fn name(self) -> &'static str {
                match self {
                    $( $Name::$Var => $name, )+
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        impl std::fmt::Display for $Name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl $crate::msg::field::Field for $Name {
            fn put(&self, w: &mut $crate::wire::Writer<'_>) {
                w.u8(self.to_u8());
            }

            fn get(
                r: &mut $crate::wire::Reader<'_>,
                field: &'static str,
            ) -> Result<Self, $crate::wire::WireError> {
                let v = r.u8(field)?;
                Self::from_u8(v).ok_or($crate::wire::WireError::Invalid { field, value: v.into() })
            }
        }
    };
}
