"""utils.geometry in kornia's style: round trips, hand-computed warps, gradcheck, real data."""

import math

import cv2
import numpy as np
import pytest
import torch

from utils import geometry as G


def _K(batch=1, f=100.0, cx=15.5, cy=11.5, dtype=torch.float64):
    K = torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=dtype)
    return K.expand(batch, 3, 3).clone()


def _pose(rx=0.0, ry=0.0, rz=0.0, t=(0.0, 0.0, 0.0), dtype=torch.float64):
    """A rigid transform from Euler angles (radians) and a translation."""
    cx, sx, cy, sy, cz, sz = (math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry),
                              math.cos(rz), math.sin(rz))
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=dtype)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=dtype)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=dtype)
    T = torch.eye(4, dtype=dtype)
    T[:3, :3] = Rz @ Ry @ Rx
    T[:3, 3] = torch.tensor(t, dtype=dtype)
    return T[None]


def _warp_image(src_bchw, depth_ref_b1hw, src_T_ref_b44, K_b33):
    """Inverse-warp a source image into the reference view through the reference depth,
    composed from utils.geometry's primitives; returns (warped, valid: positive depth,
    in front of the source camera and inside its image)."""
    _, _, h, w = src_bchw.shape
    points = G.backproject(depth_ref_b1hw, torch.linalg.inv(K_b33))[:, :, 0]
    pix, z = G.project(G.transform_points(src_T_ref_b44, points), K_b33)
    grid = G.sampling_grid(pix, h, w)
    inside = (grid.abs() <= 1).all(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    return G.sample(src_bchw, grid), inside & (z > 0) & (depth_ref_b1hw > 0)


@pytest.mark.parametrize("batch", [1, 2])
def test_project_inverts_backproject(batch):
    torch.manual_seed(0)
    depth = 0.5 + 4 * torch.rand(batch, 1, 24, 32, dtype=torch.float64)
    K = _K(batch)
    pix, z = G.project(G.backproject(depth, torch.linalg.inv(K)), K)
    grid = G.pixel_grid(24, 32, dtype=torch.float64)[:2].view(1, 2, 1, 24, 32)
    assert pix.shape == (batch, 2, 1, 24, 32)
    torch.testing.assert_close(pix, grid.expand_as(pix))
    torch.testing.assert_close(z, depth.unsqueeze(1))


def test_relative_pose_composes_to_identity():
    a, b = _pose(0.1, -0.2, 0.3, (1, 2, 3)), _pose(-0.3, 0.1, 0.05, (0.5, -1, 2))
    torch.testing.assert_close(G.relative_pose(a, b) @ G.relative_pose(b, a),
                               torch.eye(4, dtype=torch.float64)[None])
    point = torch.tensor([[[0.3], [-0.2], [2.0]]], dtype=torch.float64)
    world = G.transform_points(a, point)
    torch.testing.assert_close(G.transform_points(G.relative_pose(a, b), point),
                               G.transform_points(torch.linalg.inv(b), world))


@pytest.mark.parametrize("shift", [3.0, 1.5])
def test_fronto_parallel_warp_of_a_translation_shifts_by_f_t_over_d(shift):
    """A source camera moved by t along x sees a plane at depth d shifted by f*t/d pixels."""
    torch.manual_seed(0)
    f, depth = 100.0, 2.0
    src = torch.rand(1, 2, 24, 32, dtype=torch.float64)
    src_T_ref = _pose(t=(shift * depth / f, 0, 0))
    warped = G.homography_warp(src, torch.tensor([[depth]], dtype=torch.float64), src_T_ref,
                               _K(f=f))[:, :, 0]
    k = int(shift)
    expected = src[..., k:] if shift == k else 0.5 * (src[..., k:-1] + src[..., k + 1:])
    # atol: the official 1e-8 added to the projected depth moves samples by ~1e-7 px
    torch.testing.assert_close(warped[..., :expected.shape[-1]], expected, atol=1e-6, rtol=0)
    assert (warped[..., 32 - math.ceil(shift):] == 0).all()  # sampled outside: exactly 0


def test_homography_warp_identity_returns_source_on_every_plane():
    src = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    planes = torch.tensor([[0.5, 1.0, 4.0]], dtype=torch.float64)
    warped = G.homography_warp(src, planes, torch.eye(4, dtype=torch.float64).expand(2, 4, 4),
                               _K(2, cx=9.5, cy=7.5))
    torch.testing.assert_close(warped, src.unsqueeze(2).expand(-1, -1, 3, -1, -1), atol=1e-6,
                               rtol=0)


def test_warp_volume_moves_one_plane_along_the_optical_axis():
    d_min, interval, d = 1.0, 0.25, 6
    vol = torch.rand(1, 2, d, 16, 20, dtype=torch.float64)
    K = _K(cx=10.0, cy=8.0)  # principal point on a pixel: its ray stays on that pixel
    same = G.warp_volume(vol, d_min, interval, torch.eye(4, dtype=torch.float64)[None], K)
    # The outermost planes and pixels sit exactly on the sampling border, where rounding
    # alone would decide between the value and 0: within G.BOUNDARY_SLACK, inside.
    torch.testing.assert_close(same, vol)
    moved = G.warp_volume(vol, d_min, interval, _pose(t=(0, 0, interval)), K)
    torch.testing.assert_close(moved[:, :, :-2, 8, 10], vol[:, :, 1:-1, 8, 10])
    assert (moved[:, :, -1] == 0).all()  # beyond the last plane


def test_batch_elements_are_independent_and_nothing_is_cached():
    torch.manual_seed(1)
    src = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    poses = torch.cat([_pose(0.01, 0.02, 0, (0.1, 0, 0)), _pose(0, -0.03, 0.01, (0, 0.05, 0.1))])
    planes = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    both = G.homography_warp(src, planes, poses, _K(2))
    for i in range(2):
        one = G.homography_warp(src[i:i + 1], planes, poses[i:i + 1], _K(1))
        torch.testing.assert_close(both[i:i + 1], one)


def test_gradcheck_in_float64():
    torch.manual_seed(2)
    pose = _pose(0.02, -0.01, 0.01, (0.05, 0.02, 0.01))
    K = _K(f=10.0, cx=3.5, cy=2.5)
    planes = torch.tensor([[1.0, 1.5]], dtype=torch.float64)
    feat = torch.rand(1, 2, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: G.homography_warp(x, planes, pose, K), (feat,))
    vol = torch.rand(1, 2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: G.warp_volume(v, 1.0, 0.5, pose, K), (vol,))
    depth = (1 + torch.rand(1, 1, 6, 8, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, z: _warp_image(x, z, pose, K)[0], (feat, depth))


def test_coordinates_stay_float32_under_autocast():
    torch.manual_seed(3)
    src = torch.rand(1, 4, 32, 40)
    K = _K(f=40.0, cx=19.5, cy=15.5, dtype=torch.float32)
    pose = _pose(0.01, 0.02, 0.0, (0.1, 0.0, 0.02), dtype=torch.float32)
    planes = torch.linspace(0.5, 5, 8)[None]
    exact = G.homography_warp(src, planes, pose, K)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = G.homography_warp(src.bfloat16(), planes, pose, K)
    # only the features are rounded to bfloat16 (~3 significant digits), not the coordinates
    torch.testing.assert_close(mixed.float(), exact, atol=1e-2, rtol=1e-2)


def test_depth_reprojection_error_is_zero_for_a_consistent_pair():
    K = _K(cx=15.5, cy=11.5)
    plane = torch.full((1, 1, 24, 32), 2.0, dtype=torch.float64)
    b_T_a = _pose(t=(0.0, 0.0, 0.5))  # camera b is 0.5 m behind a: the plane is at 2.5 m
    err, valid = G.depth_reprojection_error(plane, plane + 0.5, b_T_a, K)
    assert valid.float().mean() > 0.5
    assert err[valid].abs().max() < 1e-9
    err, valid = G.depth_reprojection_error(plane, plane + 0.6, b_T_a, K)
    torch.testing.assert_close(err[valid], torch.full_like(err[valid], 0.1))


def _read_frame(folder, index):
    stem = f"{folder}/frame-{index:06d}"
    color = cv2.cvtColor(cv2.imread(f"{stem}.color.png"), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(f"{stem}.depth.png", cv2.IMREAD_UNCHANGED).astype(np.float64)
    depth[depth == 65535] = 0
    color_b3hw = torch.from_numpy(color).permute(2, 0, 1)[None].double() / 255
    return color_b3hw, torch.from_numpy(depth / 1000)[None, None], \
        torch.from_numpy(np.loadtxt(f"{stem}.pose.txt"))[None]


def test_real_7scenes_frames_warp_consistently_with_their_poses(redkitchen):
    """Frame 160's colour warped into frame 150 through frame 150's depth matches frame 150's
    colour clearly better than with the pose inverted or with no motion."""
    K = torch.from_numpy(np.loadtxt(redkitchen / "camera-intrinsics.txt"))[None]
    ref, ref_depth, world_T_ref = _read_frame(redkitchen, 150)
    src, _, world_T_src = _read_frame(redkitchen, 160)
    src_T_ref = G.relative_pose(world_T_ref, world_T_src)

    def photometric_error(pose):
        warped, valid = _warp_image(src, ref_depth, pose, K)
        return ((warped - ref).abs().mean(1, keepdim=True)[valid]).mean().item()

    correct = photometric_error(src_T_ref)
    inverted = photometric_error(torch.linalg.inv(src_T_ref))
    static = photometric_error(torch.eye(4, dtype=torch.float64)[None])
    print(f"photometric L1 (0..1): poses {correct:.4f}, inverted {inverted:.4f}, "
          f"no motion {static:.4f}")
    assert correct < 0.75 * min(inverted, static)


def test_plane_sweep_decides_border_samples_in_float64():
    """A sample 1e-6 px beyond the last column is outside (0). float32 coordinates round it
    onto the border pixel, and which way such a sample goes then depends on the device (on
    the official fixture: 0.15 m of depth between CPU and CUDA)."""
    h, w, fx = 4, 80, 64.0
    K_b33 = torch.tensor([[[fx, 0.0, 39.5], [0.0, fx, 1.5], [0.0, 0.0, 1.0]]])
    planes_bd = torch.tensor([[2.0]])
    src_T_ref_b44 = torch.eye(4)[None]
    src_T_ref_b44[0, 0, 3] = 1e-6 * 2.0 / fx  # moves every sample 1e-6 px to the right
    warped = G.homography_warp(torch.ones(1, 1, h, w), planes_bd, src_T_ref_b44, K_b33)
    assert torch.all(warped[..., -1] == 0)
    assert torch.allclose(warped[..., :-1], torch.ones(1, 1, 1, h, w - 1))


def _nudged(monkeypatch, nudge: float) -> None:
    """Move the warps' float64 deciding coordinates by a relative ``nudge`` (what fused
    multiply-adds do to them): pixels about the image centre, planes about the middle."""
    real_grid, real_coords = G.sampling_grid, G._volume_coords

    def grid(pix, h, w, decide=None):
        if decide is not None:
            centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=decide.dtype)
            centre = centre.view(1, 2, *[1] * (decide.dim() - 2))
            decide = (decide - centre) * (1 + nudge) + centre
        return real_grid(pix, h, w, decide)

    def coords(d, h, w, depth_min, depth_interval, src_T_ref, K):
        pix, plane = real_coords(d, h, w, depth_min, depth_interval, src_T_ref, K)
        if src_T_ref.dtype != G.COORD_DTYPE:
            return pix, plane
        return pix, plane * (1 + nudge)

    monkeypatch.setattr(G, "sampling_grid", grid)
    monkeypatch.setattr(G, "_volume_coords", coords)


@pytest.mark.parametrize("src_T_ref", [torch.eye(4, dtype=torch.float64)[None],
                                       _pose(t=(0.05, 0, 0))], ids=["still", "sideways"])
def test_border_decisions_do_not_turn_on_the_last_bit(monkeypatch, src_T_ref):
    """A camera that stands still or moves sideways puts whole planes, rows and columns
    exactly on the border. Moving every deciding coordinate by a relative 1e-13 (what fused
    multiply-adds do to it) changes no warped value; without the slack it does."""
    torch.manual_seed(0)
    vol = torch.rand(1, 2, 6, 16, 20)
    src = torch.rand(1, 2, 16, 20)
    K, T = _K(cx=10.0, cy=8.0).float(), src_T_ref.float()
    planes = torch.tensor([[1.0, 1.25, 2.5]])

    def warps():
        return (G.warp_volume(vol, 1.0, 0.25, T, K), G.homography_warp(src, planes, T, K))

    def changed_by_the_nudge():
        before = warps()
        with monkeypatch.context() as nudging:
            _nudged(nudging, 1e-13)
            return [not torch.equal(a, b) for a, b in zip(before, warps())]

    assert changed_by_the_nudge() == [False, False]
    monkeypatch.setattr(G, "BOUNDARY_SLACK", 0.0)
    assert changed_by_the_nudge()[0]  # the volume warp's outermost planes


def test_boundary_slack_decides_only_what_float64_rounding_cannot():
    """float32 coordinates keep the official test (one float32 ulp beyond the border is
    outside); a float64 coordinate within the slack is inside, beyond it outside."""
    after_one = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    norm = torch.tensor([1.0, after_one.item(), -after_one.item()])
    assert G._outside_to_zero(norm).tolist() == [1.0, G.OUTSIDE, G.OUTSIDE]
    decide = torch.tensor([1 + 1e-13, -1 - 1e-13, 1 + 1e-8, -1 - 1e-8], dtype=torch.float64)
    got = G._outside_to_zero(torch.zeros(4), decide)
    assert got.tolist() == [0.0, 0.0, G.OUTSIDE, G.OUTSIDE]


# ------------------------------------------------------------- adjugate inverse
def test_adjugate_inverse_by_hand():
    K = torch.tensor([[2.0, 0.0, 4.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    expected = torch.tensor([[0.5, 0.0, -2.0], [0.0, 0.25, -0.5], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)
    assert torch.equal(G.adjugate_inverse(K), expected)


@pytest.mark.parametrize("n", [3, 4])
def test_adjugate_inverse_is_the_inverse_of_any_batch(n):
    m = torch.randn(2, 7, n, n, dtype=torch.float64) + 3 * torch.eye(n, dtype=torch.float64)
    inverse = G.adjugate_inverse(m)
    assert inverse.shape == m.shape
    torch.testing.assert_close(inverse @ m, torch.eye(n, dtype=torch.float64).expand_as(m),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(inverse, torch.linalg.inv(m), rtol=1e-10, atol=1e-12)


def test_adjugate_inverse_of_a_pose_with_a_zero_diagonal():
    """A quarter turn about z has zeros on the diagonal (no pivot-free elimination works)."""
    pose = torch.tensor([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0],
                         [0.0, 0.0, 0.0, 1.0]])
    rigid_inverse = torch.eye(4)
    rigid_inverse[:3, :3] = pose[:3, :3].T
    rigid_inverse[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    assert torch.equal(G.adjugate_inverse(pose), rigid_inverse)


def test_adjugate_inverse_refuses_other_sizes():
    with pytest.raises(ValueError, match="3x3 or 4x4"):
        G.adjugate_inverse(torch.eye(2))
