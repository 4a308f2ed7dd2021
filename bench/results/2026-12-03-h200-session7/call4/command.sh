set -u
tar xJf .kit/devkit.tar.xz && source .devkit/env.sh
R=$OUT/r; mkdir -p $R
b=.devkit/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $R/gpu.txt
mkdir -p runs/data && python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt runs/data/tinyshakespeare-bytes.bin
SETS="--set logging.every=1 --set logging.progress_bar=false --set data.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false --set sample.tokens=0"
dl() { local name=$1 bin=$2 s=$SECONDS; rm -rf /tmp/dl; timeout 60 mpirun -np 1 --bind-to none $bin train --config configs/gpt2-124m-1k.yaml $SETS --set logging.run_dir=/tmp/dl --set schedule.max_steps=25 --set schedule.warmup_steps=25 > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS-s))s $(python3 -c "import json,statistics as s;m=[json.loads(l) for l in open('/tmp/dl/metrics.jsonl')];m=[x for x in m if 'tokens_per_s' in x][3:];print('tokens/s median',round(s.median(x['tokens_per_s'] for x in m)),'n',len(m))" 2>&1)" >> $R/summary.txt; }
for round in 1 2; do dl dl_prev_$round $b/dilatron_prev; dl dl_new_$round $b/dilatron; done
s=$SECONDS; DILATRON=$b/dilatron_prev OUT=$R/b1k timeout 85 bench/gpu_bench.sh configs/gpt2-124m-1k.yaml 25 > $R/b1k.txt 2>&1; echo "b1k (prev = c70ab2d) rc=$? $((SECONDS-s))s" >> $R/summary.txt
tail -4 $R/b1k.txt | head -2
cat $R/summary.txt
cd $OUT && tar czf results.tgz r && rm -rf r
