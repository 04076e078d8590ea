"""Run by tests/test_train.py under `accelerate launch --num_processes 2`: one SFT run, data-parallel."""
import sys
from pathlib import Path

from edgedistill.config import Config, DataConfig, StudentConfig
from edgedistill.student.sft import run_sft

model, sft_file, out, batch_size = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
config = Config(data=DataConfig(), student=StudentConfig(model=model, epochs=1, batch_size=batch_size,
                                                         warmup_steps=1, checkpoint_every=100, report_to=[],
                                                         precision="fp32"))   # exactness: no bf16 rounding
print(f"processes {run_sft(config, sft_file, out)['processes']}", flush=True)
