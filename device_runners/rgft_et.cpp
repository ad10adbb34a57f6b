// A C ABI over ExecuTorch's C++ runtime (libexecutorch.so and the kernel / XNNPACK libraries the
// executorch wheel ships), so the device runner can train a .pte from Python with numpy and
// ctypes alone: no torch in the process (the Python bindings link libtorch: ~280 MB resident).
//
// One handle = one program (memory-mapped, not locked) + one set of planned-memory arenas, each
// sized to the largest method's need, shared by every method the handle loads: a run that uses
// four cut-depth methods holds one arena, not four. Inputs are copied into the method's planned
// input buffers on every call and outputs copied out, so sharing is safe between calls.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/data_loader/mmap_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

namespace executorch::extension::threadpool {
// threadpool.h is not in the wheel; the symbols are (libexecutorch_threadpool.so).
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
using executorch::extension::MallocMemoryAllocator;
using executorch::extension::MmapDataLoader;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::Program;
using executorch::runtime::Span;

namespace {

struct LoadedMethod {
  std::vector<Span<uint8_t>> spans;
  std::unique_ptr<HierarchicalAllocator> planned;
  std::unique_ptr<MallocMemoryAllocator> method_alloc, temp_alloc;
  std::unique_ptr<MemoryManager> memory;
  std::unique_ptr<Method> method;
};

struct Handle {
  std::unique_ptr<MmapDataLoader> loader;
  std::unique_ptr<Program> program;
  std::vector<std::vector<uint8_t>> arenas;  // planned buffer id -> bytes (max over methods)
  std::map<std::string, std::unique_ptr<LoadedMethod>> methods;
};

int fail(char* err, size_t n, const std::string& msg) {
  if (err && n) std::snprintf(err, n, "%s", msg.c_str());
  return -1;
}

std::string code(Error e) { return "ExecuTorch error " + std::to_string(static_cast<int>(e)); }

LoadedMethod* load(Handle* h, const char* name, char* err, size_t n) {
  auto it = h->methods.find(name);
  if (it != h->methods.end()) return it->second.get();
  auto meta = h->program->method_meta(name);
  if (!meta.ok()) return fail(err, n, std::string("no method '") + name + "': " + code(meta.error())), nullptr;
  auto m = std::make_unique<LoadedMethod>();
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    int64_t need = meta->memory_planned_buffer_size(i).get();
    if (h->arenas.size() <= i) h->arenas.resize(i + 1);
    if (static_cast<int64_t>(h->arenas[i].size()) < need) {
      if (!h->methods.empty()) {  // arenas are sized up front; a bigger need is a bug here
        fail(err, n, std::string("method '") + name + "' needs a larger arena than was planned");
        return nullptr;
      }
      h->arenas[i].resize(need);
    }
    m->spans.emplace_back(h->arenas[i].data(), h->arenas[i].size());
  }
  m->planned = std::make_unique<HierarchicalAllocator>(Span<Span<uint8_t>>(m->spans.data(), m->spans.size()));
  m->method_alloc = std::make_unique<MallocMemoryAllocator>();
  m->temp_alloc = std::make_unique<MallocMemoryAllocator>();
  m->memory = std::make_unique<MemoryManager>(m->method_alloc.get(), m->planned.get(), m->temp_alloc.get());
  auto method = h->program->load_method(name, m->memory.get());
  if (!method.ok()) return fail(err, n, std::string("loading method '") + name + "': " + code(method.error())), nullptr;
  m->method = std::make_unique<Method>(std::move(method.get()));
  auto* raw = m.get();
  h->methods.emplace(name, std::move(m));
  return raw;
}

}  // namespace

extern "C" {

// Opens a .pte; arenas sized to the largest need over every method whose name starts with
// `prefix` (the training methods). Returns nullptr and a message in `err` on failure.
void* rgft_et_open(const char* path, const char* prefix, int threads, char* err, size_t n) {
  executorch::runtime::runtime_init();
  if (threads > 0) executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(threads);
  auto h = std::make_unique<Handle>();
  auto loader = MmapDataLoader::from(path, MmapDataLoader::MlockConfig::NoMlock);
  if (!loader.ok()) return fail(err, n, std::string(path) + ": cannot map: " + code(loader.error())), nullptr;
  h->loader = std::make_unique<MmapDataLoader>(std::move(loader.get()));
  auto program = Program::load(h->loader.get(), Program::Verification::InternalConsistency);
  if (!program.ok()) return fail(err, n, std::string(path) + ": not a valid program: " + code(program.error())), nullptr;
  h->program = std::make_unique<Program>(std::move(program.get()));
  for (size_t i = 0; i < h->program->num_methods(); ++i) {
    const char* name = h->program->get_method_name(i).get();
    if (std::strncmp(name, prefix, std::strlen(prefix)) != 0) continue;
    auto meta = h->program->method_meta(name);
    if (!meta.ok()) continue;
    for (size_t b = 0; b < meta->num_memory_planned_buffers(); ++b) {
      size_t need = static_cast<size_t>(meta->memory_planned_buffer_size(b).get());
      if (h->arenas.size() <= b) h->arenas.resize(b + 1);
      if (h->arenas[b].size() < need) h->arenas[b].resize(need);
    }
  }
  return h.release();
}

void rgft_et_close(void* handle) { delete static_cast<Handle*>(handle); }

// Tensor metadata of a method's input (is_output = 0) or output (1): with index < 0, returns the
// count; else writes dtype (ExecuTorch ScalarType code), ndim and sizes (up to 16) and returns 0.
int rgft_et_meta(void* handle, const char* name, int is_output, int index, int* dtype, int* ndim,
                 int64_t* sizes, char* err, size_t n) {
  auto* h = static_cast<Handle*>(handle);
  auto meta = h->program->method_meta(name);
  if (!meta.ok()) return fail(err, n, std::string("no method '") + name + "'");
  size_t count = is_output ? meta->num_outputs() : meta->num_inputs();
  if (index < 0) return static_cast<int>(count);
  if (static_cast<size_t>(index) >= count) return fail(err, n, "index out of range");
  auto info = is_output ? meta->output_tensor_meta(index) : meta->input_tensor_meta(index);
  if (!info.ok()) return fail(err, n, "not a tensor: " + code(info.error()));
  auto s = info->sizes();
  if (s.size() > 16) return fail(err, n, "more than 16 dimensions");
  *dtype = static_cast<int>(info->scalar_type());
  *ndim = static_cast<int>(s.size());
  for (size_t d = 0; d < s.size(); ++d) sizes[d] = s[d];
  return 0;
}

// Runs one method: n_in contiguous inputs (data, ScalarType code, ndim, sizes concatenated), then
// copies each tensor output into out[i] (capacity out_nbytes[i], which must equal its size).
int rgft_et_run(void* handle, const char* name, int n_in, void* const* data, const int* dtypes,
                const int* ndims, const int64_t* sizes, int n_out, void* const* out,
                const int64_t* out_nbytes, char* err, size_t n) {
  auto* h = static_cast<Handle*>(handle);
  LoadedMethod* m = load(h, name, err, n);
  if (!m) return -1;
  if (static_cast<size_t>(n_in) != m->method->inputs_size())
    return fail(err, n, std::string(name) + ": expects " + std::to_string(m->method->inputs_size()) + " inputs, got " +
                            std::to_string(n_in));
  size_t off = 0;
  for (int i = 0; i < n_in; ++i) {
    std::vector<TensorImpl::SizesType> sz(ndims[i]);
    std::vector<TensorImpl::DimOrderType> order(ndims[i]);
    std::vector<TensorImpl::StridesType> strides(ndims[i]);
    for (int d = 0; d < ndims[i]; ++d) {
      sz[d] = static_cast<TensorImpl::SizesType>(sizes[off + d]);
      order[d] = static_cast<TensorImpl::DimOrderType>(d);
    }
    for (int d = ndims[i] - 1, s = 1; d >= 0; --d) {
      strides[d] = s;
      s *= sz[d];
    }
    off += ndims[i];
    TensorImpl impl(static_cast<ScalarType>(dtypes[i]), ndims[i], sz.data(), data[i], order.data(), strides.data());
    Error e = m->method->set_input(EValue(Tensor(&impl)), i);
    if (e != Error::Ok) return fail(err, n, std::string(name) + ": input " + std::to_string(i) + " refused: " + code(e));
  }
  Error e = m->method->execute();
  if (e != Error::Ok) return fail(err, n, std::string(name) + ": execution failed: " + code(e));
  if (static_cast<size_t>(n_out) != m->method->outputs_size())
    return fail(err, n, std::string(name) + ": has " + std::to_string(m->method->outputs_size()) + " outputs");
  for (int i = 0; i < n_out; ++i) {
    const EValue& v = m->method->get_output(i);
    if (!v.isTensor()) return fail(err, n, std::string(name) + ": output " + std::to_string(i) + " is not a tensor");
    const Tensor& t = v.toTensor();
    if (static_cast<int64_t>(t.nbytes()) != out_nbytes[i])
      return fail(err, n, std::string(name) + ": output " + std::to_string(i) + " has " + std::to_string(t.nbytes()) +
                              " bytes, buffer " + std::to_string(out_nbytes[i]));
    std::memcpy(out[i], t.const_data_ptr(), t.nbytes());
  }
  return 0;
}

}  // extern "C"
