//! The legacy `adapter_model.bin`: a PyTorch `torch.save` zip archive holding a pickled state
//! dict, read without Python.
//!
//! Only what `torch.save(state_dict)` writes is understood: a stored (uncompressed) zip with
//! `<archive>/data.pkl` and one file per storage under `<archive>/data/`, and a pickle made of
//! dicts, tuples, strings, numbers, `torch._utils._rebuild_tensor_v2` calls and persistent
//! storage ids. Anything else is reported, never guessed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::PeftIoError;
use lora_hf::{bf16_to_f32, f16_to_f32, HostTensor};

/// Reads a PyTorch checkpoint holding a flat state dict of float tensors.
pub(crate) fn read_torch_file(path: &Path) -> Result<BTreeMap<String, HostTensor>, PeftIoError> {
    let bytes = std::fs::read(path).map_err(|source| lora_hf::HfFileError::io(path, source))?;
    parse_torch_bytes(&bytes).map_err(|message| PeftIoError::Pickle {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses the bytes of a `torch.save` zip archive into named tensors.
///
/// # Errors
/// A message saying what is malformed or unsupported (the zip directory, the pickle opcodes,
/// a storage type, a tensor's extent); [`PeftIoError::Pickle`] adds the file to it.
pub fn parse_torch_bytes(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, String> {
    let entries = zip_entries(bytes)?;
    let (pickle_name, pickle) = entries
        .iter()
        .find(|(name, _)| name.ends_with("data.pkl"))
        .ok_or("the archive has no data.pkl")?;
    let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    let root = Machine::default().run(pickle)?;
    let Value::Dict(items) = root else {
        return Err("the pickle does not hold a dict".into());
    };
    let mut tensors = BTreeMap::new();
    for (key, value) in items {
        let Value::Str(key) = key else {
            return Err("a state-dict key is not a string".into());
        };
        let tensor = rebuild_tensor(&value, |storage| {
            let name = format!("{prefix}data/{storage}");
            entries
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, data)| *data)
                .ok_or_else(|| format!("storage `{name}` is missing from the archive"))
        })
        .map_err(|e| format!("tensor `{key}`: {e}"))?;
        tensors.insert(key, tensor);
    }
    Ok(tensors)
}

fn rebuild_tensor<'a>(
    value: &Value,
    storage_bytes: impl Fn(&str) -> Result<&'a [u8], String>,
) -> Result<HostTensor, String> {
    let Value::Call(function, args) = value else {
        return Err("not a tensor".into());
    };
    match function.as_ref() {
        Value::Global(module, name) if module == "torch._utils" && name == "_rebuild_tensor_v2" => {
        }
        Value::Global(module, name) => {
            return Err(format!("unsupported constructor {module}.{name}"))
        }
        _ => return Err("the tensor constructor is not a global".into()),
    }
    let Value::Tuple(args) = args.as_ref() else {
        return Err("tensor arguments are not a tuple".into());
    };
    let [Value::PersistentId(storage), Value::Int(offset), Value::Tuple(size), Value::Tuple(stride), ..] =
        args.as_slice()
    else {
        return Err("unexpected tensor arguments".into());
    };
    let Value::Tuple(storage) = storage.as_ref() else {
        return Err("storage id is not a tuple".into());
    };
    let [Value::Str(kind), Value::Global(_, storage_type), Value::Str(key), ..] =
        storage.as_slice()
    else {
        return Err("unexpected storage id".into());
    };
    if kind != "storage" {
        return Err(format!("unexpected persistent id `{kind}`"));
    }
    let ints = |items: &[Value]| -> Result<Vec<usize>, String> {
        items
            .iter()
            .map(|v| match v {
                Value::Int(n) => usize::try_from(*n).map_err(|_| "negative size".to_string()),
                _ => Err("size or stride is not an integer".into()),
            })
            .collect()
    };
    let (shape, stride) = (ints(size)?, ints(stride)?);
    if shape.len() != stride.len() {
        return Err("size and stride differ in length".into());
    }
    let offset = usize::try_from(*offset).map_err(|_| "negative storage offset")?;
    let data = storage_bytes(key)?;
    let (width, decode): (usize, fn(&[u8]) -> f32) = match storage_type.as_str() {
        "FloatStorage" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "HalfStorage" => (2, |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        "BFloat16Storage" => (2, |b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        other => {
            return Err(format!(
                "unsupported storage type {other}; expected float, half or bfloat16"
            ))
        }
    };
    let elements = data.len() / width;
    // Sizes and strides come from the file: check them before any arithmetic or allocation.
    let count = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| format!("the element count of size {shape:?} overflows"))?;
    if count > elements {
        return Err(format!(
            "{count} elements (size {shape:?}), but the storage holds only {elements}"
        ));
    }
    if count > 0 {
        // The last element lies furthest into the storage.
        let last = shape.iter().zip(&stride).try_fold(offset, |at, (d, s)| {
            (d - 1)
                .checked_mul(*s)
                .and_then(|step| at.checked_add(step))
        });
        if last.is_none_or(|last| last >= elements) {
            return Err(format!(
                "offset {offset}, size {shape:?} and stride {stride:?} reach past the end of \
                 the storage of {elements} elements"
            ));
        }
    }
    let mut values = Vec::with_capacity(count);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..count {
        let position = offset + index.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
        if position >= elements {
            return Err(format!(
                "element {position} lies outside its storage of {elements}"
            ));
        }
        values.push(decode(&data[position * width..(position + 1) * width]));
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(HostTensor { values, shape })
}

/// The stored entries of a zip archive: (name, contents).
fn zip_entries(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    const END_OF_DIRECTORY: u32 = 0x0605_4b50;
    const DIRECTORY_ENTRY: u32 = 0x0201_4b50;
    const LOCAL_HEADER: u32 = 0x0403_4b50;
    let u16_at = |at: usize| -> Result<usize, String> {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| "truncated zip archive".to_string())
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "truncated zip archive".to_string())
    };
    if bytes.len() < 22 {
        return Err("not a zip archive (too short)".into());
    }
    let search_from = bytes.len().saturating_sub(22 + 65_535);
    let end = (search_from..=bytes.len() - 22)
        .rev()
        .find(|&at| u32_at(at) == Ok(END_OF_DIRECTORY))
        .ok_or("not a zip archive (no end of central directory); PyTorch files older than 1.6 are not supported")?;
    let count = u16_at(end + 10)?;
    let mut at = u32_at(end + 16)? as usize;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        if u32_at(at)? != DIRECTORY_ENTRY {
            return Err("corrupt zip central directory".into());
        }
        let method = u16_at(at + 10)?;
        let size = u32_at(at + 20)? as usize;
        let name_len = u16_at(at + 28)?;
        let extra_len = u16_at(at + 30)?;
        let comment_len = u16_at(at + 32)?;
        let local = u32_at(at + 42)? as usize;
        let name = bytes
            .get(at + 46..at + 46 + name_len)
            .ok_or("truncated zip archive")?;
        let name = String::from_utf8_lossy(name).into_owned();
        if size == u32::MAX as usize || local == u32::MAX as usize {
            return Err(format!("zip64 entry `{name}` is not supported"));
        }
        if method != 0 {
            return Err(format!(
                "entry `{name}` is compressed (method {method}); expected stored"
            ));
        }
        if u32_at(local)? != LOCAL_HEADER {
            return Err(format!("corrupt local header for `{name}`"));
        }
        let data_start = local + 30 + u16_at(local + 26)? + u16_at(local + 28)?;
        let data = bytes
            .get(data_start..data_start.checked_add(size).ok_or("entry size overflows")?)
            .ok_or_else(|| format!("entry `{name}` runs past the end of the file"))?;
        entries.push((name, data));
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

/// The values a `torch.save` pickle is built from.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// `callable(*args)`, kept unevaluated.
    Call(Box<Value>, Box<Value>),
    PersistentId(Box<Value>),
    /// A call whose result is built by `BUILD` with a state (kept for completeness).
    Built(Box<Value>, Box<Value>),
}

/// A value on the pickle machine's stack or in its memo, with how deeply it nests and about how
/// many bytes it holds, so that hostile pickles cannot nest values deeply enough to overflow the
/// call stack (dropping, cloning) or multiply them through the memo without bound.
#[derive(Debug, Clone)]
struct Item {
    value: Value,
    depth: usize,
    bytes: usize,
}

impl Item {
    /// A value without children (strings, numbers, globals and empty containers).
    fn leaf(value: Value) -> Self {
        let text = match &value {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Global(module, name) => module.len() + name.len(),
            _ => 0,
        };
        Self {
            value,
            depth: 0,
            bytes: NODE_BYTES + text,
        }
    }

    /// A value whose children were measured by [`measure`].
    fn node(value: Value, (depth, bytes): (usize, usize)) -> Self {
        Self {
            value,
            depth,
            bytes,
        }
    }
}

/// The depth and size of a value made of `children`, refused when it nests too deeply.
fn measure(children: &[&Item]) -> Result<(usize, usize), String> {
    let depth = 1 + children.iter().map(|c| c.depth).max().unwrap_or(0);
    check_depth(depth)?;
    let bytes = NODE_BYTES + children.iter().map(|c| c.bytes).sum::<usize>();
    Ok((depth, bytes))
}

/// The memory one [`Value`] takes, not counting what it owns.
const NODE_BYTES: usize = std::mem::size_of::<Value>();

/// Deepest nesting of values accepted (a state dict nests about 6 deep).
const MAX_DEPTH: usize = 100;

/// Most bytes of values the memo may copy (`BINPUT`, `BINGET`) in one pickle.
const MAX_MEMO_BYTES: usize = 256 << 20;

fn check_depth(depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
    }
    Ok(())
}

#[derive(Default)]
struct Machine {
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: BTreeMap<u32, Item>,
    memo_bytes: usize,
}

/// Upper bound on pickle operations, against hostile files.
const MAX_OPERATIONS: usize = 10_000_000;

impl Machine {
    fn run(mut self, data: &[u8]) -> Result<Value, String> {
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
            let slice = data
                .get(*at..at.checked_add(n).ok_or("length overflows")?)
                .ok_or("truncated pickle")?;
            *at += n;
            Ok(slice)
        };
        let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, x| (acc << 8) | *x as u64);
        for _ in 0..MAX_OPERATIONS {
            let op = take(&mut at, 1)?[0];
            match op {
                0x80 => {
                    take(&mut at, 1)?; // PROTO
                }
                0x95 => {
                    take(&mut at, 8)?; // FRAME
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'(' => self.marks.push(self.stack.len()),
                b'J' => {
                    let b = take(&mut at, 4)?;
                    self.push(Value::Int(
                        i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
                    ))
                }
                b'K' => {
                    let b = take(&mut at, 1)?;
                    self.push(Value::Int(b[0] as i64))
                }
                b'M' => {
                    let b = take(&mut at, 2)?;
                    self.push(Value::Int(le(b) as i64))
                }
                0x8a => {
                    let n = take(&mut at, 1)?[0] as usize;
                    let b = take(&mut at, n)?;
                    if n > 8 {
                        return Err("integer too large".into());
                    }
                    let mut value = le(b) as i64;
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        value -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(value))
                }
                b'G' => {
                    let b = take(&mut at, 8)?;
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(raw)))
                }
                b'X' | 0x8c | 0x8d => {
                    let width = match op {
                        b'X' => 4,
                        0x8c => 1,
                        _ => 8,
                    };
                    let n = le(take(&mut at, width)?) as usize;
                    let text = std::str::from_utf8(take(&mut at, n)?)
                        .map_err(|_| "invalid UTF-8 string")?;
                    self.push(Value::Str(text.to_string()))
                }
                b'U' | b'T' | b'C' | b'B' => {
                    let width = if matches!(op, b'U' | b'C') { 1 } else { 4 };
                    let n = le(take(&mut at, width)?) as usize;
                    let bytes = take(&mut at, n)?.to_vec();
                    self.push(match op {
                        b'U' | b'T' => Value::Str(String::from_utf8_lossy(&bytes).into_owned()),
                        _ => Value::Bytes(bytes),
                    })
                }
                b'c' => {
                    let module = read_line(data, &mut at)?;
                    let name = read_line(data, &mut at)?;
                    self.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = self.pop_str()?;
                    let module = self.pop_str()?;
                    self.push(Value::Global(module, name))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_tuple(items)?
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let function = self.pop()?;
                    let size = measure(&[&function, &args])?;
                    let call = Value::Call(Box::new(function.value), Box::new(args.value));
                    self.stack.push(Item::node(call, size))
                }
                b'Q' => {
                    let id = self.pop()?;
                    let size = measure(&[&id])?;
                    let persistent = Value::PersistentId(Box::new(id.value));
                    self.stack.push(Item::node(persistent, size))
                }
                b'q' => {
                    let key = take(&mut at, 1)?[0] as u32;
                    self.memoize(key)?
                }
                b'r' => {
                    let key = le(take(&mut at, 4)?) as u32;
                    self.memoize(key)?
                }
                0x94 => {
                    let key = self.memo.len() as u32;
                    self.memoize(key)?
                }
                b'h' | b'j' => {
                    let width = if op == b'h' { 1 } else { 4 };
                    let key = le(take(&mut at, width)?) as u32;
                    let item = self.memo.get(&key).ok_or("unknown memo key")?;
                    self.memo_bytes += item.bytes;
                    check_memo_bytes(self.memo_bytes)?;
                    self.stack.push(item.clone())
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_insert(vec![key, value])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.dict_insert(items)?
                }
                b'a' => {
                    let value = self.pop()?;
                    self.list_extend(vec![value])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    let size = measure(&[&object, &state])?;
                    let built = Value::Built(Box::new(object.value), Box::new(state.value));
                    self.stack.push(Item::node(built, size))
                }
                b'.' => return self.pop().map(|item| item.value),
                other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
        Err("pickle too long".into())
    }

    fn push(&mut self, value: Value) {
        self.stack.push(Item::leaf(value));
    }

    fn push_tuple(&mut self, items: Vec<Item>) -> Result<(), String> {
        let size = measure(&items.iter().collect::<Vec<_>>())?;
        let tuple = Value::Tuple(items.into_iter().map(|item| item.value).collect());
        self.stack.push(Item::node(tuple, size));
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, String> {
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn pop_str(&mut self) -> Result<String, String> {
        match self.pop()?.value {
            Value::Str(s) => Ok(s),
            _ => Err("expected a string".into()),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, String> {
        let mark = self.marks.pop().ok_or("no mark")?;
        if mark > self.stack.len() {
            return Err("mark beyond the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memoize(&mut self, key: u32) -> Result<(), String> {
        let top = self.stack.last().ok_or("memoize on an empty stack")?;
        self.memo_bytes += top.bytes;
        check_memo_bytes(self.memo_bytes)?;
        self.memo.insert(key, top.clone());
        Ok(())
    }

    /// Adds `items` to the container on top of the stack, which nests one level above them.
    fn grow(target: &mut Item, items: &[Item]) -> Result<(), String> {
        for item in items {
            target.depth = target.depth.max(item.depth + 1);
            target.bytes += item.bytes;
        }
        check_depth(target.depth)
    }

    fn dict_insert(&mut self, items: Vec<Item>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("odd number of dict items".into());
        }
        let target = self.stack.last_mut().ok_or("no dict to fill")?;
        // `OrderedDict()` arrives as a call; it becomes a dict once filled.
        if matches!(&target.value, Value::Call(f, _) if matches!(f.as_ref(), Value::Global(m, n) if m == "collections" && n == "OrderedDict"))
        {
            target.value = Value::Dict(Vec::new());
        }
        let Value::Dict(_) = target.value else {
            return Err("SETITEM on a value that is not a dict".into());
        };
        Self::grow(target, &items)?;
        let Value::Dict(entries) = &mut target.value else {
            unreachable!("checked above");
        };
        let mut items = items.into_iter().map(|item| item.value);
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            entries.push((k, v));
        }
        Ok(())
    }

    fn list_extend(&mut self, items: Vec<Item>) -> Result<(), String> {
        let Some(target) = self.stack.last_mut() else {
            return Err("APPEND on an empty stack".into());
        };
        let Value::List(_) = target.value else {
            return Err("APPEND on a value that is not a list".into());
        };
        Self::grow(target, &items)?;
        let Value::List(list) = &mut target.value else {
            unreachable!("checked above");
        };
        list.extend(items.into_iter().map(|item| item.value));
        Ok(())
    }
}

fn check_memo_bytes(bytes: usize) -> Result<(), String> {
    if bytes > MAX_MEMO_BYTES {
        return Err(format!(
            "the pickle's memo copies more than {} MiB of values",
            MAX_MEMO_BYTES >> 20
        ));
    }
    Ok(())
}

fn read_line(data: &[u8], at: &mut usize) -> Result<String, String> {
    let rest = data.get(*at..).ok_or("truncated pickle")?;
    let end = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("truncated pickle")?;
    *at += end + 1;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_torch_bytes;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"PK\x05\x06",
            &[0u8; 100],
            b"not a zip at all, just text",
        ] {
            assert!(parse_torch_bytes(bytes).is_err());
        }
    }
}
