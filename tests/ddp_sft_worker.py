"""Run by tests/test_train.py under `accelerate launch --num_processes 2`: one SFT run, data-parallel (`ddp`) or
sharded (`fsdp`)."""
import sys
from pathlib import Path

from edgedistill.config import Config, DataConfig, StudentConfig
from edgedistill.student.sft import run_sft

model, sft_file, out, batch_size, mode = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def fsdp_on_cpu():
    """accelerate runs FSDP only on GPUs (on CPUs it quietly falls back to DDP). This makes its Accelerator shard
    with FSDP2 over gloo here (each decoder layer a shard unit, as configs/accelerate/fsdp.yaml asks), so the loop's FSDP path runs on a CPU: the model and optimizer prepared together,
    gradients clipped over the shards, the weights gathered from both processes before the merged model is saved."""
    import accelerate
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    original = accelerate.Accelerator.__init__

    def init(self, *args, **kwargs):
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
        original(self, *args, fsdp_plugin=plugin, **kwargs)
        self.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.state.fsdp_plugin = plugin
    accelerate.Accelerator.__init__ = init


if mode == "fsdp":
    fsdp_on_cpu()
config = Config(data=DataConfig(), student=StudentConfig(model=model, epochs=1, batch_size=batch_size,
                                                         warmup_steps=1, checkpoint_every=100, report_to=[],
                                                         precision="fp32"))   # exactness: no bf16 rounding
print(f"processes {run_sft(config, sft_file, out)['processes']}", flush=True)
