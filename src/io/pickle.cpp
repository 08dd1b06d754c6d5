#include "io/pickle.h"

#include <cstring>
#include <map>
#include <unordered_map>

#include "util/error.h"

namespace rar::io {

const char* kind_name(PyObject::Kind k) {
  switch (k) {
    case PyObject::Kind::None: return "None";
    case PyObject::Kind::Bool: return "bool";
    case PyObject::Kind::Int: return "int";
    case PyObject::Kind::Float: return "float";
    case PyObject::Kind::Str: return "str";
    case PyObject::Kind::Bytes: return "bytes";
    case PyObject::Kind::Tuple: return "tuple";
    case PyObject::Kind::List: return "list";
    case PyObject::Kind::Dict: return "dict";
    case PyObject::Kind::Global: return "global";
    case PyObject::Kind::Tensor: return "tensor";
  }
  return "?";
}

namespace {

using K = PyObject::Kind;

// The globals a state dict may reference. Storage classes map to their element type.
const std::map<std::string, torch::ScalarType>& storage_types() {
  static const std::map<std::string, torch::ScalarType> m = {
      {"torch.FloatStorage", torch::kFloat32},   {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},    {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},     {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},      {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat}, {"torch.ComplexDoubleStorage", torch::kComplexDouble}};
  return m;
}
const char* const kCallables[] = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                                  "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"};

class Unpickler {
 public:
  Unpickler(const std::string& data, const StorageLoader& loader, const std::string& what, size_t start = 0)
      : d_(data), load_storage_(loader), what_(what), pos_(start) {}
  size_t position() const { return pos_; }

  PyRef run() {
    for (;;) {
      check(pos_ < d_.size(), what_, ": truncated pickle (no STOP opcode)");
      size_t at = pos_;
      uint8_t op = u8();
      if (op == '.') {  // STOP
        check(stack_.size() == 1 && marks_.empty(), what_, ": malformed pickle (stack at STOP)");
        return stack_.back();
      }
      step(op, at);
    }
  }

 private:
  [[noreturn]] void bad(size_t at, const std::string& msg) { fail(what_, ": pickle offset ", at, ": ", msg); }

  // Every object is made here, so that their number is bounded whatever the input.
  PyRef make(K kind) {
    if (++objects_ > kPickleMaxObjects)
      fail(what_, ": pickle offset ", pos_, ": more than ", kPickleMaxObjects, " objects (not a state dict)");
    auto o = std::make_shared<PyObject>();
    o->kind = kind;
    return o;
  }
  PyRef make_int(int64_t v) {
    auto o = make(K::Int);
    o->i = v;
    return o;
  }
  PyRef make_str(K kind, std::string s) {
    auto o = make(kind);
    o->s = std::move(s);
    return o;
  }
  // Places `child` inside the open container `parent`: the child is sealed from now on and the
  // parent's depth grows with it.
  void adopt(PyObject& parent, PyObject& child, size_t at) {
    if (&parent == &child) bad(at, cat("a ", kind_name(parent.kind), " that contains itself is not part of a state dict"));
    child.sealed = true;
    parent.depth = std::max(parent.depth, child.depth + 1);
    if (parent.depth > kPickleMaxDepth) bad(at, cat("objects nested more than ", kPickleMaxDepth, " levels deep"));
  }
  // A container may be filled (APPEND, SETITEM, ...) only before it is placed in another object.
  PyRef& open_container(PyRef& c, K kind, const char* op, size_t at) {
    if (c->kind != kind) bad(at, cat(op, " on a ", kind_name(c->kind)));
    if (c->sealed) bad(at, cat(op, " modifies a ", kind_name(c->kind), " already placed in another object"));
    return c;
  }

  void need(size_t n) {
    if (d_.size() - pos_ < n) fail(what_, ": truncated pickle at offset ", pos_);
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(d_[pos_++]);
  }
  uint64_t le(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(d_[pos_ + i])) << (8 * i);
    pos_ += n;
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    size_t e = d_.find('\n', pos_);
    if (e == std::string::npos) fail(what_, ": truncated pickle at offset ", pos_);
    std::string s = d_.substr(pos_, e - pos_);
    pos_ = e + 1;
    return s;
  }

  PyRef pop(size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) bad(at, "stack underflow");
    PyRef v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyRef& top(size_t at) {
    if (stack_.empty()) bad(at, "stack underflow");
    return stack_.back();
  }
  std::vector<PyRef> pop_mark(size_t at) {
    if (marks_.empty()) bad(at, "MARK expected");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  PyRef sequence(K kind, std::vector<PyRef> items, size_t at) {
    auto t = make(kind);
    for (auto& i : items) adopt(*t, *i, at);
    t->items = std::move(items);
    return t;
  }
  PyRef tuple(std::vector<PyRef> items, size_t at) { return sequence(K::Tuple, std::move(items), at); }
  // The memo is sparse: an index costs memory only when used (a pickle may name any 32-bit index).
  void memo_put(uint64_t idx, size_t at) { memo_[idx] = top(at); }
  PyRef memo_get(uint64_t idx, size_t at) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) bad(at, cat("memo key ", idx, " undefined"));
    return it->second;
  }

  PyRef global(const std::string& module, const std::string& name, size_t at) {
    std::string full = module + "." + name;
    bool ok = storage_types().count(full) > 0;
    for (const char* c : kCallables) ok = ok || full == c;
    if (!ok) bad(at, cat("refusing global '", full, "': only tensor data is accepted, nothing is executed"));
    return make_str(K::Global, full);
  }

  void set_item(PyRef& dict, PyRef k, PyRef v, size_t at) {
    open_container(dict, K::Dict, "SETITEM", at);
    adopt(*dict, *k, at);
    adopt(*dict, *v, at);
    dict->entries.emplace_back(std::move(k), std::move(v));
  }

  static int64_t as_int(const PyRef& o, const char* what, const std::string& where) {
    check(o->kind == K::Int || o->kind == K::Bool, where, ": ", what, " must be an int, got ", kind_name(o->kind));
    return o->i;
  }
  std::vector<int64_t> int_tuple(const PyRef& o, const char* what, size_t at) {
    if (o->kind != K::Tuple && o->kind != K::List) bad(at, cat(what, " must be a tuple of ints"));
    std::vector<int64_t> v;
    for (auto& e : o->items) v.push_back(as_int(e, what, cat(what_, ": pickle offset ", at)));
    return v;
  }

  // storage.as_strided(size, stride, offset) after checking the view stays inside the storage.
  PyRef rebuild_tensor(const std::vector<PyRef>& a, size_t at) {
    if (a.size() < 4 || a[0]->kind != K::Tensor) bad(at, "_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)");
    const torch::Tensor& storage = a[0]->tensor;
    int64_t offset = as_int(a[1], "storage offset", cat(what_, ": pickle offset ", at));
    auto size = int_tuple(a[2], "tensor size", at), stride = int_tuple(a[3], "tensor stride", at);
    if (size.size() != stride.size()) bad(at, "tensor size and stride differ in length");
    // Checked arithmetic: sizes and strides come from the file and may be anything.
    int64_t last = offset, numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < size.size(); ++i) {
      if (size[i] < 0 || stride[i] < 0) bad(at, "negative tensor size or stride");
      int64_t span = 0;
      overflow |= __builtin_mul_overflow(numel, size[i], &numel);
      if (size[i] > 0) {
        overflow |= __builtin_mul_overflow(size[i] - 1, stride[i], &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    }
    if (overflow) bad(at, cat("tensor size ", c10::IntArrayRef(size), " / stride ", c10::IntArrayRef(stride), " overflows"));
    if (offset < 0 || (numel > 0 && last >= storage.numel()))
      bad(at, cat("tensor view (offset ", offset, ", size ", c10::IntArrayRef(size), ", stride ",
                  c10::IntArrayRef(stride), ") exceeds its storage of ", storage.numel(), " elements"));
    auto t = make(K::Tensor);
    t->tensor = numel == 0 ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
    return t;
  }

  PyRef call(const PyRef& fn, const PyRef& args, size_t at) {
    if (fn->kind != K::Global) bad(at, cat("REDUCE on a ", kind_name(fn->kind), ", not a global"));
    if (args->kind != K::Tuple) bad(at, "REDUCE arguments are not a tuple");
    const auto& a = args->items;
    if (fn->s == "collections.OrderedDict") {
      if (!a.empty()) bad(at, "OrderedDict() with arguments");
      return make(K::Dict);
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a, at);
    if (fn->s == "torch._utils._rebuild_parameter" || fn->s == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != K::Tensor) bad(at, "_rebuild_parameter expects a tensor");
      return a[0];
    }
    bad(at, cat("'", fn->s, "' cannot be called"));
  }

  PyRef persistent_load(const PyRef& pid, size_t at) {
    // torch >= 1.6: 5 items; the legacy format adds view metadata, None for whole storages.
    const bool legacy = pid->kind == K::Tuple && pid->items.size() == 6;
    if (pid->kind != K::Tuple || (pid->items.size() != 5 && !legacy) || pid->items[0]->kind != K::Str ||
        pid->items[0]->s != "storage")
      bad(at, "persistent id is not ('storage', type, key, location, numel)");
    if (legacy && pid->items[5]->kind != K::None) bad(at, "storage views (legacy view metadata) are not supported");
    const auto& it = pid->items;
    if (it[1]->kind != K::Global || !storage_types().count(it[1]->s)) bad(at, "unknown storage type");
    if (it[2]->kind != K::Str) bad(at, "storage key is not a string");
    int64_t numel = as_int(it[4], "storage size", cat(what_, ": pickle offset ", at));
    if (numel < 0) bad(at, "negative storage size");
    auto key = it[2]->s;
    auto found = storages_.find(key);
    if (found == storages_.end()) {
      auto t = make(K::Tensor);
      t->tensor = load_storage_(storage_types().at(it[1]->s), key, numel);
      found = storages_.emplace(key, t).first;  // storages shared between tensors load once
    }
    return found->second;
  }

  void step(uint8_t op, size_t at) {
    switch (op) {
      case 0x80: {  // PROTO
        uint8_t v = u8();
        if (v < 2 || v > 5) bad(at, cat("unsupported pickle protocol ", int(v)));
        break;
      }
      case 0x95: le(8); break;  // FRAME: framing is transparent to us
      case '(': marks_.push_back(stack_.size()); break;
      case '}': stack_.push_back(make(K::Dict)); break;
      case ']': stack_.push_back(make(K::List)); break;
      case ')': stack_.push_back(make(K::Tuple)); break;
      case 't': stack_.push_back(tuple(pop_mark(at), at)); break;
      case 0x85: { auto a = pop(at); stack_.push_back(tuple({a}, at)); break; }
      case 0x86: { auto b = pop(at), a = pop(at); stack_.push_back(tuple({a, b}, at)); break; }
      case 0x87: { auto c = pop(at), b = pop(at), a = pop(at); stack_.push_back(tuple({a, b, c}, at)); break; }
      case 'l': stack_.push_back(sequence(K::List, pop_mark(at), at)); break;
      case 'd': {
        auto items = pop_mark(at);
        if (items.size() % 2) bad(at, "DICT with an odd number of items");
        auto d = make(K::Dict);
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1], at);
        stack_.push_back(d);
        break;
      }
      case 'a': {
        auto v = pop(at);
        auto& l = open_container(top(at), K::List, "APPEND", at);
        adopt(*l, *v, at);
        l->items.push_back(v);
        break;
      }
      case 'e': {
        auto items = pop_mark(at);
        auto& l = open_container(top(at), K::List, "APPENDS", at);
        for (auto& i : items) adopt(*l, *i, at);
        l->items.insert(l->items.end(), items.begin(), items.end());
        break;
      }
      case 's': { auto v = pop(at), k = pop(at); set_item(top(at), k, v, at); break; }
      case 'u': {
        auto items = pop_mark(at);
        if (items.size() % 2) bad(at, "SETITEMS with an odd number of items");
        auto& d = top(at);
        for (size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1], at);
        break;
      }
      case 'J': stack_.push_back(make_int(static_cast<int32_t>(le(4)))); break;
      case 'K': stack_.push_back(make_int(u8())); break;
      case 'M': stack_.push_back(make_int(static_cast<int64_t>(le(2)))); break;
      case 0x8a: {  // LONG1: little-endian two's complement of n bytes
        uint8_t n = u8();
        if (n > 8) bad(at, "integer too large");
        uint64_t v = le(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);
        stack_.push_back(make_int(static_cast<int64_t>(v)));
        break;
      }
      case 'N': stack_.push_back(make(K::None)); break;
      case 0x88: case 0x89: { auto b = make(K::Bool); b->i = op == 0x88; stack_.push_back(b); break; }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        need(8);
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(d_[pos_ + i]);
        pos_ += 8;
        auto f = make(K::Float);
        std::memcpy(&f->f, &v, 8);
        stack_.push_back(f);
        break;
      }
      case 'X': stack_.push_back(make_str(K::Str, bytes(le(4)))); break;
      case 0x8c: stack_.push_back(make_str(K::Str, bytes(u8()))); break;
      case 0x8d: stack_.push_back(make_str(K::Str, bytes(le(8)))); break;
      case 'U': stack_.push_back(make_str(K::Str, bytes(u8()))); break;  // SHORT_BINSTRING (py2 str)
      case 'T': stack_.push_back(make_str(K::Str, bytes(le(4)))); break;  // BINSTRING
      case 'C': stack_.push_back(make_str(K::Bytes, bytes(u8()))); break;
      case 'B': stack_.push_back(make_str(K::Bytes, bytes(le(4)))); break;
      case 'q': memo_put(u8(), at); break;
      case 'r': memo_put(le(4), at); break;
      case 0x94: memo_put(next_memo_++, at); break;  // MEMOIZE
      case 'h': stack_.push_back(memo_get(u8(), at)); break;
      case 'j': stack_.push_back(memo_get(le(4), at)); break;
      case 'c': {
        std::string module = line(), name = line();
        stack_.push_back(global(module, name, at));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = pop(at), module = pop(at);
        if (name->kind != K::Str || module->kind != K::Str) bad(at, "STACK_GLOBAL needs two strings");
        stack_.push_back(global(module->s, name->s, at));
        break;
      }
      case 'R': {
        auto args = pop(at), fn = pop(at);
        stack_.push_back(call(fn, args, at));
        break;
      }
      case 'b': {  // BUILD: only OrderedDict's attribute dict (holding `_metadata`) is accepted
        auto state = pop(at);
        auto& obj = top(at);
        if (obj->kind != K::Dict || (state->kind != K::Dict && state->kind != K::None))
          bad(at, cat("BUILD on a ", kind_name(obj->kind), " is not part of a state dict"));
        break;
      }
      case 'Q': {
        auto pid = pop(at);
        stack_.push_back(persistent_load(pid, at));
        break;
      }
      case '0': pop(at); break;
      case '1': pop_mark(at); break;
      case '2': stack_.push_back(top(at)); break;
      default:
        bad(at, cat("unsupported pickle opcode 0x", std::hex, int(op),
                    " (only the opcodes of a tensor state dict are accepted)"));
    }
    if (marks_.size() > 10000 || stack_.size() > static_cast<size_t>(kPickleMaxObjects))
      bad(at, "pickle stack too deep (not a state dict)");
  }

  const std::string& d_;
  const StorageLoader& load_storage_;
  std::string what_;
  size_t pos_ = 0;
  uint64_t next_memo_ = 0;
  int64_t objects_ = 0;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
  std::map<std::string, PyRef> storages_;
};

}  // namespace

PyRef unpickle(const std::string& data, const StorageLoader& load_storage, const std::string& what) {
  return Unpickler(data, load_storage, what).run();
}

PyRef unpickle_at(const std::string& data, size_t& pos, const StorageLoader& load_storage, const std::string& what) {
  Unpickler u(data, load_storage, what, pos);
  auto r = u.run();
  pos = u.position();
  return r;
}

}  // namespace rar::io
