"""The config schema with the paper's defaults; files in configs/ start from ``base_config()``."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.preset = 'ViT-B/16'      # models.config.PRESETS; ignored when init is set
  c.model.init = ''                # HF CLIP dir or OpenAI-format checkpoint ('' = random init, data's tokenizer);
                                   # the tokenizer files are read from the checkpoint's directory
  c.model.overrides = ml_collections.ConfigDict()  # preset fields, e.g. vision_layers=2
  c.model.dtype = 'float32'        # compute dtype ('bfloat16' on TPU/GPU); parameters stay float32
  c.model.remat = False
  c.model.batchnorm = 'frozen'     # ResNet towers: 'frozen' statistics or 'batch' (synchronised) statistics
  c.model.pixel_normalization = 'clip'  # 'sketch' (white -> 0) for towers trained from scratch
  c.model.head = 'fusion'          # 'fusion' (attention over image ⊕ text tokens) or 'linear'
  c.model.fusion_width = 256
  c.model.fusion_layers = 1
  c.model.fusion_heads = 4

  c.data = ml_collections.ConfigDict()
  c.data.dir = ''                  # ingested data set; '' = the embedded synthetic set (built on first use)
  c.data.synthetic_patents = 1500
  c.data.synthetic_seed = 0
  c.data.stored_image_size = 128   # synthetic set: stored drawing size
  c.data.tokenizer_vocab = 2048    # synthetic set: BPE trained on its captions
  c.data.context_length = 77
  c.data.pair_strategy = 'cover'   # multi-view pairs: 'cover' | 'random' | 'front'
  c.data.label = 'uspc'            # classes trained on and scored: 'uspc' (33 design classes, the paper) or
                                   # 'locarno' (01-32, 99; records without a Locarno code are left out)
  c.data.augment = True
  c.data.worker_count = 0          # Grain worker processes (0 was fastest on 2 cores)
  c.data.read_threads = 32         # examples of a batch read and made at once per process (bucket latency)

  c.loss = ml_collections.ConfigDict()
  c.loss.lambdas = (1.0, 0.1, 0.2)  # (CACLS, CACL, MVCL), the paper's values
  c.loss.beta_sample = 1.2          # class-aware sampling: P(record) ∝ f_c^-β
  c.loss.beta_loss = 1.2            # loss weights 1/f_c^β (mean 1 over the global batch)
  # True: in L_CACL and L_MVCL another record of the same family (a continuation, a division: near-identical
  # drawings) is no negative, as another draw of the same record never is; False (the paper): only the record
  c.loss.mask_same_family = False

  c.train = ml_collections.ConfigDict()
  c.train.steps = 10000
  c.train.global_batch = 128
  # >1: GradCache accumulation (train.step.accumulated_train_step): the same update with activations held
  # for global_batch / micro_batches examples at a time, every negative kept; ~1/3 more tower compute
  c.train.micro_batches = 1
  c.train.learning_rate = 1e-5
  c.train.warmup_steps = 500
  c.train.final_lr_fraction = 0.0
  c.train.weight_decay = 0.2
  c.train.grad_clip = 1.0
  c.train.freeze_vision = False
  c.train.freeze_text = False
  c.train.seed = 0
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0            # >0: evaluate on eval.periodic_split every N steps (logged as val/...; a
                                    # preemption notice stops it at the next batch, and the step is saved)
  c.train.keep_checkpoints = 3
  c.train.profile_steps = ()        # steps (1-based) to trace with jax.profiler into the workdir's TensorBoard
                                    # (Profile tab), e.g. (101, 102, 103); consecutive steps share one trace

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                 # -1: all devices not used by fsdp
  c.mesh.fsdp = 1                  # >1: parameters and optimizer state split over this many devices (in a slice)
  c.mesh.slices = 1                # TPU slices joined by the data-center network (or processes, where devices
                                   # have no slice_index): only data parallelism crosses them

  c.eval = ml_collections.ConfigDict()
  c.eval.split = 'test'
  c.eval.tasks = ('zero_shot', 'image_retrieval', 'multimodal_retrieval', 'linear_probe')
  c.eval.batch_size = 128
  c.eval.template = 'a sketch of {}'
  c.eval.periodic_split = 'validation'
  # not the linear probe: it embeds the whole train split (and fits a classifier) at every periodic evaluation
  c.eval.periodic_tasks = ('zero_shot', 'multimodal_retrieval')

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False    # or DESIGNCLIP_DISTRIBUTED=1; auto-detects TPU pods / SLURM
  c.distributed.coordinator_address = ''
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.local_device_ids = ()
  return c
