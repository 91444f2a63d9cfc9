"""wav2vec 2.0 assembled from `components`, `quantizer` and `masking` (Baevski et al. 2020).

- `Wav2Vec2Model`: feature encoder -> feature projection -> (masking) -> Transformer.
- `Wav2Vec2ForPreTraining`: adds the quantizer and the two projections of the contrastive
  task (section 3.2) and returns its logits; the loss is `w2v.train.losses`.
- `Wav2Vec2ForCTC`: adds a linear output layer for CTC fine-tuning (section 4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from w2v.models.components import (
    ConvFeatureEncoder,
    FeatureProjection,
    GradMultiply,
    TransformerEncoder,
    frame_lengths_on,
    init_bert_params,
    init_conv_feature_encoder,
    lengths_to_padding_mask,
)
from w2v.models.adapters import is_adapter_key
from w2v.models.config import Wav2Vec2Config
from w2v.models.masking import (
    Generator,
    compute_mask_indices,
    device_generator,
    negative_positions,
    negative_uniforms,
    static_negative_picks,
)
from w2v.models.quantizer import GumbelVectorQuantizer, gumbel_uniforms


@dataclass
class Wav2Vec2Output:
    """What `Wav2Vec2Model.forward` returns.

    Attributes:
        hidden: (batch, frames, dim) context representations c.
        lengths: (batch,) valid frames.
        padding_mask: (batch, frames) bool, True at padding.
        features: (batch, frames, conv_dim) unmasked conv features after layer norm.
        mask_indices: (batch, frames) bool time mask, or None if unmasked.
        features_pen: scalar, mean squared conv feature over valid frames (before the norm).
        layer_results: `layers + 1` hidden states (see `TransformerEncoder`), or None.
    """

    hidden: Tensor
    lengths: Tensor
    padding_mask: Tensor
    features: Tensor
    mask_indices: Tensor | None
    features_pen: Tensor
    layer_results: list[Tensor] | None = None


@dataclass
class PreTrainingOutput:
    """What `Wav2Vec2ForPreTraining.forward` returns.

    Attributes:
        logits: (num_masked, 1 + K) cosine similarity / logit_temp; column 0 is the positive,
            negatives identical to the positive are -inf. From the static head
            (`Wav2Vec2ForPreTraining.static_head`): (batch * frames, 1 + K), a row per frame,
            of which only the rows where `frame_mask` is True count.
        prob_perplexity, code_perplexity: scalars (None without a quantizer), in [G, G*V].
        num_vars: G*V (0 without a quantizer).
        temperature: current Gumbel temperature.
        features_pen: scalar feature penalty.
        mask_indices: (batch, frames) bool.
        lengths: (batch,) valid frames.
        frame_mask: (batch * frames,) bool, the rows of `logits` that count, or None when
            every row does.
    """

    logits: Tensor
    prob_perplexity: Tensor | None
    code_perplexity: Tensor | None
    num_vars: int
    temperature: float
    features_pen: Tensor
    mask_indices: Tensor
    lengths: Tensor
    frame_mask: Tensor | None = None


def _zero_padded_samples(waveforms: Tensor, lengths: Tensor | None) -> Tensor:
    """Padding content must not matter, even where group norm sees the whole time axis."""
    if lengths is None:
        return waveforms
    pad = lengths_to_padding_mask(lengths.to(waveforms.device, non_blocking=True), waveforms.shape[1])
    return waveforms.masked_fill(pad, 0.0)


class Wav2Vec2Model(nn.Module):
    """The wav2vec 2.0 encoder shared by pre-training and fine-tuning (HF `Wav2Vec2Model`)."""

    def __init__(self, cfg: Wav2Vec2Config):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = ConvFeatureEncoder(cfg.conv_feature_layers, cfg.extractor_mode, cfg.conv_bias)
        self.feature_projection = FeatureProjection(cfg.conv_dim, cfg.encoder_embed_dim, cfg.dropout_input)
        self.masked_spec_embed = nn.Parameter(torch.empty(cfg.encoder_embed_dim).uniform_())
        self.encoder = TransformerEncoder(
            dim=cfg.encoder_embed_dim,
            ffn_dim=cfg.encoder_ffn_embed_dim,
            layers=cfg.encoder_layers,
            heads=cfg.encoder_attention_heads,
            conv_pos=cfg.conv_pos,
            conv_pos_groups=cfg.conv_pos_groups,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout,
            activation=cfg.activation_fn,
            layer_norm_first=cfg.layer_norm_first,
            layerdrop=cfg.layerdrop,
            adapter_dim=cfg.adapter_dim,
        )
        self.feature_grad_mult = cfg.feature_grad_mult
        init_conv_feature_encoder(self.feature_extractor)
        init_bert_params(self.encoder.layers)

    def freeze_feature_encoder(self) -> None:
        """No gradient into the convolutions (fine-tuning recipe); the projection still trains."""
        self.feature_grad_mult = 0.0
        for p in self.feature_extractor.parameters():
            p.requires_grad_(False)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.feature_extractor.output_lengths(lengths)

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Raw conv features with fairseq's gradient scaling.

        Returns:
            (batch, frames, conv_dim) features and (batch,) frame lengths.
        """
        waveforms = _zero_padded_samples(waveforms, lengths)
        if self.feature_grad_mult > 0:
            features, frame_lengths = self.feature_extractor(waveforms, lengths)
            if self.feature_grad_mult != 1.0:
                features = GradMultiply.apply(features, self.feature_grad_mult)
        else:
            with torch.no_grad():
                features, frame_lengths = self.feature_extractor(waveforms, lengths)
        return features, frame_lengths_on(features, frame_lengths)

    def compute_masks(
        self, padding_mask: Tensor, dim: int, generator: Generator = None, with_time: bool = True
    ) -> tuple[Tensor | None, Tensor | None]:
        """Time mask (batch, frames) and channel mask (batch, dim) from the config's rates."""
        cfg = self.cfg
        time = None
        if with_time and cfg.mask_prob > 0:
            time = compute_mask_indices(
                tuple(padding_mask.shape), padding_mask, cfg.mask_prob, cfg.mask_length, cfg.mask_min_masks, generator
            )
        channel = None
        if cfg.mask_channel_prob > 0:
            channel = compute_mask_indices(
                (padding_mask.shape[0], dim), None, cfg.mask_channel_prob, cfg.mask_channel_length, 0, generator,
                device=padding_mask.device,
            )
        return time, channel

    def forward(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        mask: bool = False,
        mask_indices: Tensor | None = None,
        generator: Generator = None,
        output_hidden_states: bool = False,
    ) -> Wav2Vec2Output:
        """
        Args:
            waveforms: (batch, samples) float.
            lengths: (batch,) valid samples, or None if unpadded. Lengths on the CPU that
                show no padding are dropped, so that attention runs unmasked (flash).
            mask: draw time masks (cfg.mask_prob) and channel masks (cfg.mask_channel_prob).
            mask_indices: (batch, frames) bool time mask to use instead of drawing one.
            generator: source of the masks.
            output_hidden_states: also return every layer's hidden states.

        Returns:
            Wav2Vec2Output.
        """
        generator = device_generator(generator, waveforms.device)
        if lengths is not None and lengths.device.type == "cpu" and bool((lengths >= waveforms.shape[1]).all()):
            lengths = None  # known unpadded without a device sync: attention runs without a mask
        raw, frame_lengths = self.extract_features(waveforms, lengths)
        padding_mask = lengths_to_padding_mask(frame_lengths, raw.shape[1])
        valid = (~padding_mask).unsqueeze(-1).to(raw.dtype)
        # Over valid frames only, so the penalty does not depend on batch composition
        # (fairseq averages over padded frames too).
        features_pen = (raw.float().pow(2) * valid).sum() / (valid.sum() * raw.shape[-1]).clamp(min=1)
        x, features = self.feature_projection(raw)

        channel_mask = None
        if mask:
            drawn_time, channel_mask = self.compute_masks(padding_mask, x.shape[-1], generator, mask_indices is None)
            mask_indices = mask_indices if mask_indices is not None else drawn_time
        if mask_indices is not None:
            mask_indices = mask_indices.to(x.device) & ~padding_mask
            x = torch.where(mask_indices.unsqueeze(-1), self.masked_spec_embed.to(x.dtype), x)
        if channel_mask is not None:
            x = x.masked_fill(channel_mask.unsqueeze(1), 0.0)

        hidden, layer_results = self.encoder(x, None if lengths is None else padding_mask, output_hidden_states)
        return Wav2Vec2Output(
            hidden=hidden,
            lengths=frame_lengths,
            padding_mask=padding_mask,
            features=features,
            mask_indices=mask_indices,
            features_pen=features_pen,
            layer_results=layer_results,
        )


class Wav2Vec2ForPreTraining(nn.Module):
    """Self-supervised wav2vec 2.0: mask, contextualise, and pick the true quantized latent
    among distractors (section 3.2). Returns logits; `w2v.train.losses.pretraining_loss`
    turns them into the objective."""

    def __init__(self, cfg: Wav2Vec2Config):
        super().__init__()
        if cfg.codebook_negatives > 0 and not cfg.quantize_targets:
            raise ValueError("codebook_negatives needs quantize_targets (they are drawn from the codebook)")
        self.cfg = cfg
        self.wav2vec2 = Wav2Vec2Model(cfg)
        self.dropout_features = nn.Dropout(cfg.dropout_features)
        if cfg.quantize_targets:
            self.quantizer = GumbelVectorQuantizer(
                cfg.conv_dim, cfg.latent_groups, cfg.latent_vars, cfg.codevector_dim, cfg.latent_temp
            )
            self.project_q = nn.Linear(cfg.codevector_dim, cfg.final_dim)
        else:
            self.quantizer = None
            self.project_q = nn.Linear(cfg.conv_dim, cfg.final_dim)
        self.project_hid = nn.Linear(cfg.encoder_embed_dim, cfg.final_dim)
        # Set by `accel.compile_model`: everything after the Transformer with static shapes
        # (`static_logits`, compiled): no host synchronisation, a few fused kernels.
        self.static_head = False

    def set_num_updates(self, num_updates: int) -> None:
        if self.quantizer is not None:
            self.quantizer.set_num_updates(num_updates)

    def freeze_feature_encoder(self) -> None:
        self.wav2vec2.freeze_feature_encoder()

    def forward(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        generator: Generator = None,
        mask_indices: Tensor | None = None,
        negatives_indices: Tensor | None = None,
    ) -> PreTrainingOutput:
        """
        Args:
            waveforms: (batch, samples).
            lengths: (batch,) valid samples, or None.
            generator: source of masks, negatives and Gumbel noise (torch.Generator for the
                latter; a numpy generator is accepted for masks and negatives only).
            mask_indices: (batch, frames) bool, to use instead of drawing masks.
            negatives_indices: (K, num_masked) indices into the flattened (batch * frames)
                grid, to use instead of sampling (parity tests).

        Returns:
            PreTrainingOutput.
        """
        generator = device_generator(generator, waveforms.device)
        out = self.wav2vec2(waveforms, lengths, mask=True, mask_indices=mask_indices, generator=generator)
        return self.contrastive_head(out, generator, negatives_indices)

    def contrastive_head(
        self, out: Wav2Vec2Output, generator: Generator = None, negatives_indices: Tensor | None = None
    ) -> PreTrainingOutput:
        """Quantize the unmasked features, draw negatives and score them against the context
        vectors at the masked frames (everything after the Transformer)."""
        cfg = self.cfg
        if out.mask_indices is None:
            raise ValueError("pre-training needs masks: set mask_prob > 0 or pass mask_indices")
        if self.static_head and negatives_indices is None and self.static_head_applies():
            return self._static_contrastive_head(out, generator)
        mask_indices = out.mask_indices
        b, t, _ = out.features.shape
        unmasked = self.dropout_features(out.features)

        if self.quantizer is not None:
            gumbel_gen = generator if isinstance(generator, torch.Generator) else None
            q = self.quantizer(unmasked, mask=mask_indices, generator=gumbel_gen)
            targets = self.project_q(q.quantized)
            prob_ppl, code_ppl, num_vars, temp = q.prob_perplexity, q.code_perplexity, q.num_vars, q.temperature
        else:
            targets = self.project_q(unmasked)
            prob_ppl = code_ppl = None
            num_vars, temp = 0, 0.0

        targets = targets.reshape(b * t, -1)
        if negatives_indices is None:
            # Queued after the whole encoder, so the one host sync (finding the masked frames)
            # waits for work already on the device instead of starving it.
            flat, picks = negative_positions(mask_indices, cfg.num_negatives, generator, cfg.cross_sample_negatives)
            flat, picks = flat.to(targets.device), picks.to(targets.device)
        else:
            flat = mask_indices.reshape(-1).nonzero().squeeze(1)
        positives = targets[flat]  # (N, final_dim)
        predictions = self.project_hid(out.hidden.reshape(b * t, -1)[flat])  # (N, final_dim)
        extra = None
        if cfg.codebook_negatives > 0:
            gen = generator if isinstance(generator, torch.Generator) else None
            n = positives.shape[0]
            sampled = self.quantizer.sample_codevectors(cfg.codebook_negatives * n, gen).to(targets.dtype)
            extra = self.project_q(sampled).view(cfg.codebook_negatives, n, -1)
        if negatives_indices is None:
            logits = self.sampled_contrastive_logits(predictions, positives, picks, extra)
        else:
            negatives = targets[negatives_indices.to(targets.device)]
            if extra is not None:
                negatives = torch.cat([negatives, extra])
            logits = self.contrastive_logits(predictions, positives, negatives)
        return PreTrainingOutput(
            logits=logits,
            prob_perplexity=prob_ppl,
            code_perplexity=code_ppl,
            num_vars=num_vars,
            temperature=temp,
            features_pen=out.features_pen,
            mask_indices=mask_indices,
            lengths=out.lengths,
        )

    def static_head_applies(self) -> bool:
        """The static head covers negatives from the same utterance (the paper's); cross-sample
        and codebook negatives take the general path."""
        return self.cfg.cross_sample_negatives == 0 and self.cfg.codebook_negatives == 0

    def _static_contrastive_head(self, out: Wav2Vec2Output, generator: Generator) -> PreTrainingOutput:
        """`contrastive_head` with a row of logits per frame: the randomness is drawn here, the
        rest is `static_logits` (one compiled graph under `accel.compile_model`)."""
        b, t, _ = out.features.shape
        dev = out.features.device
        neg_u = negative_uniforms(self.cfg.num_negatives, (b, t), generator, dev)
        gumbel_u = tau = None
        temp = 0.0
        if self.quantizer is not None:
            temp = self.quantizer.temperature
            tau = torch.tensor(temp, dtype=torch.float32)  # a tensor: its decay must not recompile
            if self.training:
                gen = generator if isinstance(generator, torch.Generator) else None
                g, v = self.quantizer.num_groups, self.quantizer.num_vars_per_group
                gumbel_u = gumbel_uniforms((b * t, g, v), gen, dev)
        logits, prob_ppl, code_ppl = self.static_logits(out.features, out.hidden, out.mask_indices, neg_u,
                                                        gumbel_u, tau)
        return PreTrainingOutput(
            logits=logits,
            prob_perplexity=prob_ppl,
            code_perplexity=code_ppl,
            num_vars=0 if self.quantizer is None else self.quantizer.num_vars,
            temperature=temp,
            features_pen=out.features_pen,
            mask_indices=out.mask_indices,
            lengths=out.lengths,
            frame_mask=out.mask_indices.reshape(-1),
        )

    def static_logits(
        self, features: Tensor, hidden: Tensor, mask_indices: Tensor, neg_u: Tensor,
        gumbel_u: Tensor | None, temperature: Tensor | None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Quantizer, projections, negatives and logits for every frame, all shapes fixed by
        the input's (batch, frames).

        Args:
            features: (B, T, C) unmasked conv features; hidden: (B, T, D) context vectors.
            mask_indices: (B, T) bool, the positives.
            neg_u: (K, B, T) uniforms of the negatives (`masking.negative_uniforms`).
            gumbel_u: (B * T, G, V) uniforms of the Gumbel noise (`quantizer.gumbel_uniforms`),
                or None (evaluation); temperature: 0-dim tensor.

        Returns:
            logits (B * T, 1 + K) as `contrastive_logits` row by row, and the two perplexities.
        """
        b, t, _ = features.shape
        unmasked = self.dropout_features(features)
        prob_ppl = code_ppl = None
        if self.quantizer is not None:
            q = self.quantizer(unmasked, mask=mask_indices, uniforms=gumbel_u, temperature=temperature)
            targets = self.project_q(q.quantized)
            prob_ppl, code_ppl = q.prob_perplexity, q.code_perplexity
        else:
            targets = self.project_q(unmasked)
        predictions = self.project_hid(hidden)
        picks = static_negative_picks(mask_indices, neg_u).permute(1, 2, 0)  # (B, T, K)
        k = picks.shape[-1]
        with torch.autocast(features.device.type, enabled=False):
            p = predictions.float()
            p = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            q = targets.float()
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            positive = (p * q).sum(-1, keepdim=True)  # (B, T, 1)
            # Every frame against every frame of its utterance, then the drawn columns.
            negative = torch.bmm(p, q.transpose(1, 2)).gather(2, picks)  # (B, T, K)
            exact = targets.detach()
            drawn = exact.gather(1, picks.reshape(b, t * k, 1).expand(-1, -1, exact.shape[-1]))
            dup = (drawn.view(b, t, k, -1) == exact.unsqueeze(2)).all(-1)
            logits = torch.cat([positive, negative.masked_fill(dup, float("-inf"))], dim=-1)
            return logits.reshape(b * t, 1 + k) / self.cfg.logit_temp, prob_ppl, code_ppl

    def contrastive_logits(self, predictions: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        """Cosine similarities / logit_temp, fp32.

        Args:
            predictions: (N, D) projected context vectors.
            positives: (N, D) projected quantized targets.
            negatives: (K, N, D).

        Returns:
            (N, 1 + K); a negative equal to its positive gets -inf (fairseq), so a duplicate
            code is neither rewarded nor penalised.
        """
        candidates = torch.cat([positives.unsqueeze(0), negatives], dim=0).float()  # (1+K, N, D)
        logits = F.cosine_similarity(predictions.float().unsqueeze(0), candidates, dim=-1) / self.cfg.logit_temp
        neg_is_pos = (negatives == positives.unsqueeze(0)).all(-1)  # (K, N)
        logits = torch.cat([logits[:1], logits[1:].masked_fill(neg_is_pos, float("-inf"))])
        return logits.transpose(0, 1)

    def sampled_contrastive_logits(
        self, predictions: Tensor, positives: Tensor, picks: Tensor, extra: Tensor | None = None,
        chunk_elements: int = 1 << 25,
    ) -> Tensor:
        """`contrastive_logits` for negatives drawn among the positives, without gathering them.

        Every prediction is compared with every positive by one fp32 matrix product of unit
        vectors (in row blocks of at most `chunk_elements` similarities), and the sampled
        columns are picked from it: K * N * D gathered vectors and their gradient scatter
        become an N x N product.

        Args:
            predictions, positives: (N, D).
            picks: (K, N) positions in `positives` of each row's negatives.
            extra: (E, N, D) further negatives (codebook samples), compared directly.

        Returns:
            (N, 1 + K + E), as `contrastive_logits`.
        """
        n = predictions.shape[0]
        with torch.autocast(predictions.device.type, enabled=False):
            p = predictions.float()
            p = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            q = positives.float()
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            exact = positives.detach()
            rows = max(1, chunk_elements // max(n, 1))
            cols = [(p * q).sum(-1, keepdim=True)]
            negs = []
            for i in range(0, n, rows):
                sim = p[i:i + rows] @ q.T  # (rows, N)
                idx = picks[:, i:i + rows].T  # (rows, K)
                dup = (exact[idx] == exact[i:i + rows, None]).all(-1)
                negs.append(sim.gather(1, idx).masked_fill(dup, float("-inf")))
            cols.append(torch.cat(negs) if negs else p.new_zeros(0, picks.shape[0]))
            if extra is not None:
                e = F.cosine_similarity(p.unsqueeze(0), extra.float(), dim=-1)  # (E, N)
                dup = (extra == positives.unsqueeze(0)).all(-1)
                cols.append(e.masked_fill(dup, float("-inf")).T)
            return torch.cat(cols, dim=1) / self.cfg.logit_temp


class Wav2Vec2ForCTC(nn.Module):
    """wav2vec 2.0 with a linear projection to `vocab_size` output tokens for CTC.

    Args:
        cfg: encoder config (fine-tuning usually overrides mask_prob, dropouts, layerdrop).
        vocab_size: output units including the CTC blank.
        final_dropout: dropout before the output layer (fairseq `final_dropout`).
    """

    def __init__(self, cfg: Wav2Vec2Config, vocab_size: int, final_dropout: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.wav2vec2 = Wav2Vec2Model(cfg)
        self.dropout = nn.Dropout(final_dropout)
        self.lm_head = nn.Linear(cfg.encoder_embed_dim, vocab_size)
        # fairseq's Linear(): Xavier-uniform weight, zero bias.
        nn.init.xavier_uniform_(self.lm_head.weight)
        nn.init.zeros_(self.lm_head.bias)

    def freeze_feature_encoder(self) -> None:
        self.wav2vec2.freeze_feature_encoder()

    def load_pretrained(self, pretraining_state_dict: dict[str, Tensor]) -> list[str]:
        """Copy the `wav2vec2.*` weights of a `Wav2Vec2ForPreTraining` state dict.

        Every encoder parameter and buffer must be present (KeyError otherwise) and no
        unknown `wav2vec2.*` key may appear; quantizer and projection weights are dropped.
        Language adapters (`cfg.adapter_dim`) the pre-trained model lacks keep their fresh init.

        Returns:
            The dropped (non-`wav2vec2.`) keys.
        """
        prefix = "wav2vec2."
        encoder_sd = {k[len(prefix):]: v for k, v in pretraining_state_dict.items() if k.startswith(prefix)}
        dropped = sorted(k for k in pretraining_state_dict if not k.startswith(prefix))
        expected = set(self.wav2vec2.state_dict())
        missing = sorted(expected - set(encoder_sd))
        unexpected = sorted(set(encoder_sd) - expected)
        fresh_adapters = all(is_adapter_key(k) for k in missing)
        if (missing and not fresh_adapters) or unexpected:
            raise KeyError(f"pre-training state dict mismatch: missing {missing}, unexpected {unexpected}")
        self.wav2vec2.load_state_dict(encoder_sd, strict=not missing)
        return dropped

    def forward(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        apply_mask: bool = False,
        generator: Generator = None,
        train_encoder: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """
        Args:
            waveforms: (batch, samples).
            lengths: (batch,) valid samples, or None.
            apply_mask: mask time steps and channels with the config's rates (fine-tuning
                augmentation); off at evaluation.
            generator: source of the masks.
            train_encoder: False runs the encoder without gradients, so only the output layer
                learns (fairseq's freeze_finetune_updates, the first updates of fine-tuning).

        Returns:
            logits (batch, frames, vocab_size) and (batch,) frame lengths.
        """
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            out = self.wav2vec2(waveforms, lengths, mask=apply_mask, generator=generator)
        return self.lm_head(self.dropout(out.hidden)), out.lengths


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "PreTrainingOutput",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2Model",
    "Wav2Vec2Output",
    "count_parameters",
]
