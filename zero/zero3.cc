#include "zero/zero3.h"

#include <algorithm>

#include "core/check.h"
#include "optim/adamw.h"

namespace dilatron {
namespace {

NvmeOptions nvme_subdirectory(const NvmeOptions& nvme, const char* name) {
  NvmeOptions out = nvme;
  out.directory = nvme.directory + "/" + name;
  return out;
}

// Buffers of the streaming optimizer step: piece g uses slot g % 3, so reading piece g + 1
// waits only for the write-back of piece g - 2.
constexpr int kStreamSlots = 3;

// The AdamW step's tasks: a group's segments cut at the multiples of kHostChunkElements.
std::vector<AdamWChunk> update_chunks(const std::vector<Zero3Segment>& segments) {
  std::vector<AdamWSegment> runs;
  for (const Zero3Segment& s : segments) runs.push_back({s.piece_offset, s.length, s.weight_decay});
  return adamw_chunks(runs, kHostChunkElements);
}

}  // namespace

float* Zero3Engine::BufferPool::take() {
  if (free_.empty()) {
    all_.push_back(allocate_io_buffer(elements_));
    free_.push_back(all_.back().get());
  }
  float* b = free_.back();
  free_.pop_back();
  peak_ = std::max(peak_, ++out_);
  return b;
}

void Zero3Engine::BufferPool::give(float* buffer) {
  DILATRON_CHECK(buffer != nullptr, "returning a null buffer to the pool");
  free_.push_back(buffer);
  --out_;
}

Zero3Engine::Zero3Engine(const GptShape& shape, Communicator& world, const Zero3Options& options)
    : shape_(shape), world_(world), options_(options) {
  DILATRON_CHECK_INPUT(options.prefetch_depth >= 0, "zero.prefetch_depth must be >= 0, got {}",
                       options.prefetch_depth);
  DILATRON_CHECK_INPUT(options.persistence_threshold >= 0, "zero.persistence_threshold must be >= 0, got {}",
                       options.persistence_threshold);
  int64_t largest_padded = 0, largest_local = 0;
  std::vector<int64_t> piece_elements;
  for (Zero3GroupLayout& layout : zero3_layout(shape, world.size(), world.rank(), options.persistence_threshold)) {
    largest_padded = std::max(largest_padded, layout.padded);
    largest_local = std::max(largest_local, layout.local);
    piece_elements.push_back(layout.local);
    groups_.emplace_back();
    static_cast<Zero3GroupLayout&>(groups_.back()) = std::move(layout);
    groups_.back().update_chunks = update_chunks(groups_.back().segments);
  }
  params_ = make_shard_store(options.params_tier, piece_elements, nvme_subdirectory(options.nvme, "params"));
  adam_m_ = make_shard_store(options.optimizer_tier, piece_elements, nvme_subdirectory(options.nvme, "adam_m"));
  adam_v_ = make_shard_store(options.optimizer_tier, piece_elements, nvme_subdirectory(options.nvme, "adam_v"));
  int64_t shard_elements = 0;
  for (const Group& grp : groups_) shard_elements += grp.local;
  grad_shard_.assign(static_cast<size_t>(shard_elements), 0.0f);
  if (world.size() > 1) scatter_out_.assign(static_cast<size_t>(largest_local), 0.0f);
  full_pool_ = std::make_unique<BufferPool>(largest_padded);
  piece_pool_ = std::make_unique<BufferPool>(largest_local);
  pool_ = std::make_unique<HostPool>(options.host_threads);
}

Zero3Engine::~Zero3Engine() {
  // A gather still in flight writes into a pool buffer: let it finish first.
  for (Group& grp : groups_) grp.gather.wait();
}

Zero3Engine::Group& Zero3Engine::group_at(int group, const char* what) {
  DILATRON_CHECK(group >= 0 && group < num_groups(), "{} of group {} outside [0, {})", what, group, num_groups());
  return groups_[group];
}

const Zero3Engine::Group& Zero3Engine::group_at(int group, const char* what) const {
  DILATRON_CHECK(group >= 0 && group < num_groups(), "{} of group {} outside [0, {})", what, group, num_groups());
  return groups_[group];
}

bool Zero3Engine::replicated(int group) const { return group_at(group, "replicated").replicated; }
Residency Zero3Engine::residency(int group) const { return group_at(group, "residency").state.get(); }

float* Zero3Engine::load_piece(ShardStore& s, int g, float* buffer) {
  if (float* resident = s.resident(g)) return resident;
  s.read_async(g, buffer).wait();
  return buffer;
}

void Zero3Engine::store_piece(ShardStore& s, int g, float* data) {
  if (s.resident(g) != data) s.write_async(g, data).wait();
}

ShardStore& Zero3Engine::store(const std::string& kind) const {
  if (kind == "params") return *params_;
  if (kind == "adam_m") return *adam_m_;
  if (kind == "adam_v") return *adam_v_;
  DILATRON_CHECK(false, "unknown state kind '{}' (params, adam_m or adam_v)", kind);
  return *params_;
}

void Zero3Engine::start_gather(int g) {
  Group& grp = groups_[g];
  grp.state.start(g);
  grp.gathered = full_pool_->take();
  if (params_->resident(g) == nullptr) {
    grp.staging = piece_pool_->take();
    params_->read_async(g, grp.staging).wait();
  }
  const float* shard = grp.staging ? grp.staging : params_->resident(g);
  if (grp.replicated || world_.size() == 1)  // the shard is the whole group
    host_copy(*pool_, shard, grp.local, grp.gathered);
  else
    grp.gather = world_.all_gather_async(shard, grp.gathered, grp.local, DType::f32);
}

void Zero3Engine::finish_gather(int g) {
  Group& grp = groups_[g];
  grp.gather.wait();
  grp.state.complete(g);
  if (grp.staging) {
    piece_pool_->give(grp.staging);
    grp.staging = nullptr;
  }
}

void Zero3Engine::prefetch() {
  const size_t ahead = std::min(upcoming_.size(), static_cast<size_t>(options_.prefetch_depth));
  for (size_t i = 0; i < ahead; ++i)
    if (groups_[upcoming_[i]].state.get() == Residency::not_available) start_gather(upcoming_[i]);
}

void Zero3Engine::will_acquire(int group) {
  group_at(group, "will_acquire");
  upcoming_.push_back(group);
}

const float* Zero3Engine::acquire(int group) {
  Group& grp = group_at(group, "acquire");
  DILATRON_CHECK(!grp.held, "acquire of group {}, which is already acquired (release it first)", group);
  // Off the announced schedule: the rest of the announcement is stale.
  if (!upcoming_.empty() && upcoming_.front() == group)
    upcoming_.pop_front();
  else
    upcoming_.clear();
  if (grp.state.get() == Residency::not_available) start_gather(group);
  if (grp.state.get() == Residency::in_flight) finish_gather(group);
  grp.held = true;
  prefetch();
  return grp.gathered;
}

void Zero3Engine::release(int group) {
  Group& grp = group_at(group, "release");
  DILATRON_CHECK(grp.held, "release of group {}, which is not acquired (residency {})", group,
                 residency_name(grp.state.get()));
  grp.state.free(group);
  grp.held = false;
  full_pool_->give(grp.gathered);
  grp.gathered = nullptr;
}

float* Zero3Engine::acquire_gradients(int group) {
  Group& grp = group_at(group, "acquire_gradients");
  DILATRON_CHECK(grp.grad_buffer == nullptr, "acquire_gradients of group {} twice without gradients_done", group);
  grp.grad_buffer = full_pool_->take();
  host_fill(*pool_, grp.grad_buffer, grp.padded, 0.0f);  // padding included: it reduce-scatters as 0
  return grp.grad_buffer;
}

void Zero3Engine::gradients_done(int group) {
  Group& grp = group_at(group, "gradients_done");
  DILATRON_CHECK(grp.grad_buffer != nullptr, "gradients_done of group {} without acquire_gradients", group);
  // One rank: the buffer is already the sum over the world, and the shard is the whole group.
  const float* summed = grp.grad_buffer;
  if (grp.replicated) {
    if (world_.size() > 1) world_.all_reduce(grp.grad_buffer, grp.numel, DType::f32, ReduceOp::sum);
  } else if (world_.size() > 1) {
    world_.reduce_scatter(grp.grad_buffer, scatter_out_.data(), grp.local, DType::f32, ReduceOp::sum);
    summed = scatter_out_.data();
  }
  host_add(*pool_, summed, grp.local, grad_shard_.data() + grp.shard_offset);
  full_pool_->give(grp.grad_buffer);
  grp.grad_buffer = nullptr;
}

void Zero3Engine::drop_gathered() {
  for (int g = 0; g < num_groups(); ++g) {
    Group& grp = groups_[g];
    DILATRON_CHECK(!grp.held && grp.grad_buffer == nullptr,
                   "group {} is still acquired by the model: parameters cannot change under it", g);
    if (grp.state.get() == Residency::in_flight) finish_gather(g);
    if (grp.state.get() == Residency::available) {
      grp.state.free(g);
      full_pool_->give(grp.gathered);
      grp.gathered = nullptr;
    }
  }
  upcoming_.clear();
}

void Zero3Engine::init_parameters(uint64_t seed) {
  drop_gathered();
  for (int g = 0; g < num_groups(); ++g) {
    const Group& grp = groups_[g];
    float* buffer = piece_pool_->take();
    auto in_memory = [&](ShardStore& s) { return s.resident(g) ? s.resident(g) : buffer; };
    auto zeroed = [&](ShardStore& s) {
      float* piece = in_memory(s);
      std::fill_n(piece, grp.local, 0.0f);
      return piece;
    };
    store_piece(*adam_m_, g, zeroed(*adam_m_));
    store_piece(*adam_v_, g, zeroed(*adam_v_));
    float* piece = in_memory(*params_);
    zero3_init_piece(shape_, grp, g, seed, piece);
    store_piece(*params_, g, piece);
    piece_pool_->give(buffer);
  }
}

void Zero3Engine::zero_gradients() {
  for (const Group& grp : groups_)
    DILATRON_CHECK(grp.grad_buffer == nullptr, "zero_gradients while the model holds a gradient buffer");
  host_fill(*pool_, grad_shard_.data(), static_cast<int64_t>(grad_shard_.size()), 0.0f);
}

double Zero3Engine::gradient_sum_of_squares() {
  double sum = 0;
  for (const Group& grp : groups_)
    // A replica is counted once, by rank 0; padding holds zeros.
    if (!grp.replicated || world_.rank() == 0)
      sum += host_sum_of_squares(*pool_, grad_shard_.data() + grp.shard_offset, grp.local);
  world_.all_reduce(&sum, 1, DType::f64, ReduceOp::sum);
  return sum;
}

void Zero3Engine::scale_gradients(float factor) {
  host_scale(*pool_, grad_shard_.data(), static_cast<int64_t>(grad_shard_.size()), factor);
}

void Zero3Engine::adamw_step(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  drop_gathered();
  ShardStore* stores[3] = {params_.get(), adam_m_.get(), adam_v_.get()};
  struct Slot {
    float* buffer[3] = {};
    IoTicket read[3], write[3];
  };
  Slot slots[kStreamSlots];
  std::vector<std::shared_ptr<float>> owned;
  for (Slot& slot : slots)
    for (int k = 0; k < 3; ++k)
      if (stores[k]->tier() == StorageTier::nvme) {
        owned.push_back(allocate_io_buffer(piece_pool_->elements()));
        slot.buffer[k] = owned.back().get();
      }
  auto begin_read = [&](int g) {
    Slot& slot = slots[g % kStreamSlots];
    for (int k = 0; k < 3; ++k)
      if (stores[k]->resident(g) == nullptr) {
        slot.write[k].wait();
        slot.read[k] = stores[k]->read_async(g, slot.buffer[k]);
      }
  };
  const AdamWStep decayed{lr, beta1, beta2, eps, weight_decay, step}, plain{lr, beta1, beta2, eps, 0.0f, step};
  if (num_groups() > 0) begin_read(0);
  for (int g = 0; g < num_groups(); ++g) {
    if (g + 1 < num_groups()) begin_read(g + 1);
    Slot& slot = slots[g % kStreamSlots];
    float* data[3];
    for (int k = 0; k < 3; ++k) {
      data[k] = stores[k]->resident(g);
      if (data[k] == nullptr) {
        slot.read[k].wait();
        data[k] = slot.buffer[k];
      }
    }
    const float* grad = grad_shard_.data() + groups_[g].shard_offset;
    const std::vector<AdamWChunk>& chunks = groups_[g].update_chunks;
    pool_->run(static_cast<int64_t>(chunks.size()), [&](int64_t i) {
      const AdamWChunk& c = chunks[static_cast<size_t>(i)];
      adamw_update_cpu(data[0] + c.begin, grad + c.begin, data[1] + c.begin, data[2] + c.begin, c.length,
                       c.weight_decay ? decayed : plain);
    });
    for (int k = 0; k < 3; ++k)
      if (stores[k]->resident(g) == nullptr) slot.write[k] = stores[k]->write_async(g, slot.buffer[k]);
  }
  for (Slot& slot : slots)
    for (IoTicket& t : slot.write) t.wait();
}

std::vector<Zero3Engine::Slice> Zero3Engine::owned_logical_slices() const {
  std::vector<Zero3GroupLayout> layout(groups_.begin(), groups_.end());
  return zero3_owned_slices(layout);
}

void Zero3Engine::read_owned(const std::string& kind, std::vector<float>& out) const {
  ShardStore& s = store(kind);
  out.clear();
  float* buffer = piece_pool_->take();
  for (int g = 0; g < num_groups(); ++g) {
    const int64_t lo = groups_[g].owned_lo, hi = groups_[g].owned_hi;
    if (hi <= lo) continue;
    const float* piece = load_piece(s, g, buffer);
    out.insert(out.end(), piece + lo, piece + hi);
  }
  piece_pool_->give(buffer);
}

std::vector<Zero3Engine::ResidentSlice> Zero3Engine::resident_owned(const std::string& kind) const {
  ShardStore& s = store(kind);
  std::vector<ResidentSlice> out;
  if (s.tier() == StorageTier::nvme) return out;
  for (int g = 0; g < num_groups(); ++g) {
    const Group& grp = groups_[g];
    const int64_t lo = grp.owned_lo, hi = grp.owned_hi;
    if (hi > lo) out.push_back({grp.begin + grp.local_begin + lo, hi - lo, s.resident(g) + lo});
  }
  return out;
}

void Zero3Engine::write_owned(const std::string& kind, const std::vector<float>& in) {
  ShardStore& s = store(kind);
  drop_gathered();
  int64_t expected = 0;
  for (const Slice& slice : owned_logical_slices()) expected += slice.length;
  DILATRON_CHECK(static_cast<int64_t>(in.size()) == expected, "write_owned('{}'): {} values for {} owned elements",
                 kind, in.size(), expected);
  float* buffer = piece_pool_->take();
  size_t next = 0;
  for (int g = 0; g < num_groups(); ++g) {
    const Group& grp = groups_[g];
    const int64_t lo = grp.owned_lo, hi = grp.owned_hi;
    if (hi <= lo && !grp.replicated) continue;
    float* piece = load_piece(s, g, buffer);
    std::copy(in.begin() + static_cast<int64_t>(next), in.begin() + static_cast<int64_t>(next) + (hi - lo), piece + lo);
    next += static_cast<size_t>(hi - lo);
    if (grp.replicated && world_.size() > 1) world_.broadcast(piece, grp.numel, DType::f32, 0);
    store_piece(s, g, piece);
  }
  piece_pool_->give(buffer);
}

Zero3Engine::MemoryReport Zero3Engine::memory() const {
  int64_t local = 0, replicated = 0;
  for (const Group& grp : groups_) {
    local += grp.local;
    if (grp.replicated) replicated += grp.numel;
  }
  const int64_t f = static_cast<int64_t>(sizeof(float));
  return {local * f,
          local * f,
          2 * local * f,
          full_pool_->peak() * full_pool_->elements() * f,
          4 * replicated * f,
          params_->disk_bytes() + adam_m_->disk_bytes() + adam_v_->disk_bytes(),
          options_.params_tier,
          options_.optimizer_tier};
}

}  // namespace dilatron
